//! The `coltrast-torch` binary: coltrast's CLI with libtorch registered. `coltrast` starts it for runs that
//! train or embed with libtorch; it can also be called directly with the same arguments.

fn main() -> std::process::ExitCode {
    coltrast_torch::register();
    coltrast::cli::main()
}
