//! Build script for packages whose binaries or tests link LibTorch: records an rpath to the
//! LibTorch that `.ci/setup-torch` installs (so no LD_LIBRARY_PATH is needed), and keeps
//! libtorch_cuda linked even though nothing references it by symbol, so a GPU is used when
//! present.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(dir) = std::env::var("LIBTORCH") else {
        return;
    };
    let lib = std::path::Path::new(&dir).join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
}
