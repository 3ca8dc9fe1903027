// The coltrast binary does not link libtorch; the tests do (through tch and coltrast-torch, dev-dependencies).
// Give the targets an rpath to the libtorch that `make setup` installed (LIBTORCH, as torch-sys reads it); the
// coltrast binary ignores it, since nothing it needs lives there.
fn main() {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
}
