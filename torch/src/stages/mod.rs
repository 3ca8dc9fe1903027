//! The bodies of the libtorch stages declared in `coltrast::stages` (chunk and mine reach libtorch only through
//! [`coltrast::backend::SentenceEncoder`]; export only for its parity reference).

pub mod train;
