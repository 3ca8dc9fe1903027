// The coltrast binary does not link libtorch; the tests do (through tch and coltrast-torch, dev-dependencies).
// Give the targets an rpath to the libtorch that `make setup` installed (LIBTORCH, as torch-sys reads it). Cargo
// has no directive for the library's own test harness alone, so the coltrast binary gets the rpath too; it links
// no libtorch library (tests/serve.rs checks), so the only effect is where libgomp is found first.
fn main() {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
}
