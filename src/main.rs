//! The `coltrast` binary: the CLI of [`coltrast::cli`], without libtorch (runs that need it go to
//! `coltrast-torch`).

fn main() -> std::process::ExitCode {
    coltrast::cli::main()
}
