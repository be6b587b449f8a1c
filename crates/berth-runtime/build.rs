//! Links against the system's `libseccomp.so.2`. A fresh machine of this kind has the runtime
//! library but not `libseccomp-dev`, whose only contribution to linking is the unversioned
//! `libseccomp.so` symlink; this makes that symlink in OUT_DIR and puts it on the search path.

fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("seccomp-link");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/seccomp-link");
    let link = out.join("libseccomp.so");
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/libseccomp.so.2",
        "/usr/lib/aarch64-linux-gnu/libseccomp.so.2",
        "/usr/lib64/libseccomp.so.2",
        "/usr/lib/libseccomp.so.2",
        "/lib/x86_64-linux-gnu/libseccomp.so.2",
    ];
    match candidates.iter().find(|c| std::path::Path::new(c).exists()) {
        Some(target) => {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).expect("symlink libseccomp.so");
            println!("cargo:rustc-link-search=native={}", out.display());
        }
        None => println!("cargo:warning=libseccomp.so.2 not found; install Debian's libseccomp2"),
    }
    println!("cargo:rerun-if-changed=build.rs");
}
