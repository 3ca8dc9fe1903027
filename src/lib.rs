//! coltrast: a content-hashed pipeline that fine-tunes a sentence encoder with ColTrast.
pub mod encoder;
