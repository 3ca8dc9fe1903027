// Give the binary an rpath to the libtorch that setup installed, and to the FAISS C API library that coltrast's
// build script found (DEP_COLTRAST_FAISS_LIB), so it runs without LD_LIBRARY_PATH.
// With the `cuda` feature, also link libtorch_cuda: nothing in tch references it, so the linker's --as-needed
// would drop it and libtorch would see no GPU (../shared/TOOLCHAIN.md, libtorch).
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if let Ok(dir) = std::env::var("DEP_COLTRAST_FAISS_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
