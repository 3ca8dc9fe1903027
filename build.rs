// The coltrast binary does not link libtorch; the tests do (through tch and coltrast-torch, dev-dependencies).
// Give the targets an rpath to the libtorch that `make setup` installed (LIBTORCH, as torch-sys reads it). Cargo
// has no directive for the library's own test harness alone, so the coltrast binary gets the rpath too; it links
// no libtorch library (tests/serve.rs checks), so the only effect is where libgomp is found first.
//
// FAISS: the faiss crate links `libfaiss_c`, which `make setup` builds from Debian's libfaiss-dev into
// $COLTRAST_CACHE/faiss-c-<version>/lib (COLTRAST_FAISS_LIB names another folder). This script puts that folder
// on the linker's search path (cargo passes it to every crate that links coltrast) and into the rpath, and hands
// it to coltrast-torch's build script as DEP_COLTRAST_FAISS_LIB for its binaries' rpath.
use std::path::PathBuf;

const FAISS_VERSION: &str = "1.7.3";

fn faiss_lib() -> PathBuf {
    if let Some(dir) = std::env::var_os("COLTRAST_FAISS_LIB") {
        return PathBuf::from(dir);
    }
    let cache = match std::env::var_os("COLTRAST_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/coltrast"),
    };
    cache.join(format!("faiss-c-{FAISS_VERSION}")).join("lib")
}

fn main() {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
    let faiss = faiss_lib();
    if !faiss.join("libfaiss_c.so").is_file() {
        panic!(
            "{}: no libfaiss_c.so: run `make setup` (it compiles FAISS {FAISS_VERSION}'s C API against Debian's \
             libfaiss-dev), or set COLTRAST_FAISS_LIB to the folder that holds it",
            faiss.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", faiss.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", faiss.display());
    println!("cargo:faiss_lib={}", faiss.display());
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=COLTRAST_CACHE");
    println!("cargo:rerun-if-env-changed=COLTRAST_FAISS_LIB");
    println!("cargo:rerun-if-changed={}", faiss.join("libfaiss_c.so").display());
    println!("cargo:rerun-if-changed=build.rs");
}
