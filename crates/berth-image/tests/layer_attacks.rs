//! Layers built as an attacker would build them, unpacked for real as root: links in parent
//! components, whiteouts and opaque markers through links, hard links out of the layer,
//! overlay's own attributes, layers bigger than the limit, many pods unpacking one layer at
//! once. Each test asserts that nothing outside the layer changed and that the error names the
//! entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_image::unpack::{UnpackOptions, UnpackStats, unpack, unpack_layer};
use berth_image::{Digest, ImageError, ImageStore, LayerRef};

/// One entry of a crafted layer.
#[derive(Debug, Clone)]
enum E {
    File(&'static str, &'static [u8]),
    Dir(&'static str),
    Symlink(&'static str, String),
    Hardlink(&'static str, String),
    Xattr(&'static str, &'static str, &'static [u8]),
}

fn build(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        match e {
            E::File(p, data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Dir(p) => {
                h.set_mode(0o755);
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::Symlink(p, target) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Hardlink(p, target) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Xattr(p, name, value) => {
                let key = format!("SCHILY.xattr.{name}");
                b.append_pax_extensions([(key.as_str(), *value)]).unwrap();
                h.set_size(1);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, p, &b"x"[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A host directory outside the layer, with files an attacker would like to reach, and a
/// snapshot of it to compare with afterwards.
struct Victim {
    dir: PathBuf,
}

impl Victim {
    fn new(base: &Path) -> Victim {
        let dir = base.join("victim");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("precious"), b"keep me").unwrap();
        std::fs::write(dir.join("sub/deeper"), b"and me").unwrap();
        Victim { dir }
    }

    /// Every name under the victim with its type, mode, size, contents and attributes.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        use std::os::unix::fs::MetadataExt;
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(p) = stack.pop() {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let attrs: Vec<String> = xattr::list(&p)
                .map(|l| l.map(|n| n.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let body = if m.is_file() {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            } else {
                String::new()
            };
            out.insert(
                p.clone(),
                format!("{:o} {} {} {attrs:?} {body}", m.mode(), m.nlink(), m.len()),
            );
            if m.is_dir() {
                for e in std::fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
            }
        }
        out
    }
}

/// Unpacks `entries` into a fresh layer directory beside a fresh victim under `base`, and
/// asserts the victim is exactly as it was, whatever the outcome.
fn attack(base: &Path, entries: &[E]) -> Result<UnpackStats, ImageError> {
    let victim = Victim::new(base);
    let before = victim.snapshot();
    let layer = base.join("layer");
    let _ = std::fs::remove_dir_all(&layer);
    std::fs::create_dir(&layer).unwrap();
    let r = unpack_layer(&build(entries)[..], &layer);
    assert_eq!(victim.snapshot(), before, "the victim changed: {entries:?}");
    r
}

fn victim_path(t: &Path) -> String {
    t.join("victim").display().to_string()
}

fn refused_naming(r: Result<UnpackStats, ImageError>, entry: &str) -> String {
    let msg = r.expect_err("the layer must be refused").to_string();
    assert!(msg.contains(entry), "the error names {entry}: {msg}");
    msg
}

#[test]
fn a_whiteout_under_a_linked_directory_deletes_nothing_outside() {
    let t = tempfile::tempdir().unwrap();
    let v = victim_path(t.path());
    for entries in [
        vec![E::Symlink("a", v.clone()), E::File("a/.wh.precious", b"")],
        vec![E::Symlink("a", v.clone()), E::File("a/.wh.sub", b"")],
        vec![
            E::Symlink("a", "../victim".into()),
            E::File("a/.wh.precious", b""),
        ],
        vec![
            E::Dir("d"),
            E::Symlink("d/a", v.clone()),
            E::File("d/a/sub/.wh.deeper", b""),
        ],
    ] {
        let r = attack(t.path(), &entries);
        let msg = refused_naming(r, ".wh.");
        assert!(msg.contains("symbolic link"), "{msg}");
    }
}

#[test]
fn an_opaque_marker_under_a_link_marks_nothing_outside() {
    let t = tempfile::tempdir().unwrap();
    let v = victim_path(t.path());
    let r = attack(
        t.path(),
        &[E::Symlink("a", v), E::File("a/.wh..wh..opq", b"")],
    );
    refused_naming(r, "a/.wh..wh..opq");
}

#[test]
fn files_directories_and_links_through_a_linked_parent_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let v = victim_path(t.path());
    for (entries, named) in [
        (
            vec![E::Symlink("a", v.clone()), E::File("a/precious", b"pwned")],
            "a/precious",
        ),
        (
            vec![E::Symlink("a", v.clone()), E::File("a/new", b"planted")],
            "a/new",
        ),
        (
            vec![E::Symlink("a", v.clone()), E::Dir("a/newdir")],
            "a/newdir",
        ),
        (
            vec![E::Symlink("a", v.clone()), E::Symlink("a/l", "/".into())],
            "a/l",
        ),
        (
            vec![
                E::Symlink("a", v.clone()),
                E::Xattr("a/precious", "user.x", b"1"),
            ],
            "a/precious",
        ),
        (
            vec![
                E::Dir("x"),
                E::Symlink("x/y", v.clone()),
                E::File("x/y/sub/deeper", b""),
            ],
            "x/y/sub/deeper",
        ),
    ] {
        let r = attack(t.path(), &entries);
        refused_naming(r, named);
    }
}

#[test]
fn hard_links_cannot_reach_files_outside_the_layer() {
    let t = tempfile::tempdir().unwrap();
    let v = victim_path(t.path());
    for entries in [
        // Absolute: taken as relative to the layer, where it does not exist.
        vec![
            E::Hardlink("h", format!("{v}/precious")),
            E::File("h", b"overwrite"),
        ],
        // Through a link in the layer.
        vec![
            E::Symlink("a", v.clone()),
            E::Hardlink("h", "a/precious".into()),
        ],
        vec![E::Hardlink("h", "../victim/precious".into())],
    ] {
        let r = attack(t.path(), &entries);
        refused_naming(r, "h");
    }
}

#[test]
fn links_inside_the_layer_still_work_and_existing_names_are_replaced_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let v = victim_path(t.path());
    let layer = t.path().join("layer");
    let stats = attack(
        t.path(),
        &[
            E::Dir("usr/bin"),
            E::File("usr/bin/tool", b"#!/bin/sh\n"),
            E::Symlink("bin", "usr/bin".into()),
            E::Hardlink("usr/bin/tool2", "usr/bin/tool".into()),
            // A link to the victim, then a file of the same name: the link is replaced.
            E::Symlink("p", format!("{v}/precious")),
            E::File("p", b"mine"),
            E::Symlink("q", v.clone()),
            E::Dir("q"),
            E::Symlink("abs", "/etc/passwd".into()),
        ],
    )
    .unwrap();
    assert_eq!(stats.entries, 9);
    assert_eq!(
        std::fs::read_link(layer.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(layer.join("usr/bin/tool2"))
            .unwrap()
            .nlink(),
        2
    );
    assert_eq!(std::fs::read(layer.join("p")).unwrap(), b"mine");
    assert!(std::fs::symlink_metadata(layer.join("q")).unwrap().is_dir());
    assert_eq!(
        std::fs::read_link(layer.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[test]
fn overlay_attributes_from_an_image_are_dropped_and_allowed_ones_kept() {
    let t = tempfile::tempdir().unwrap();
    let layer = t.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    unpack_layer(
        &build(&[
            E::Xattr("redirect", "trusted.overlay.redirect", b"/etc"),
            E::Xattr("opaque", "trusted.overlay.opaque", b"y"),
            E::Xattr("mine", "user.note", b"hello"),
        ])[..],
        &layer,
    )
    .unwrap();
    assert_eq!(
        xattr::get(layer.join("redirect"), "trusted.overlay.redirect").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(layer.join("opaque"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(layer.join("mine"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"hello"[..])
    );
}

#[test]
fn modes_owners_and_set_id_bits_are_kept() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let layer = t.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o4755);
    h.set_uid(1000);
    h.set_gid(2000);
    h.set_size(2);
    h.set_mtime(1_600_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "bin/su", &b"su"[..]).unwrap();
    unpack_layer(&b.into_inner().unwrap()[..], &layer).unwrap();
    let m = std::fs::metadata(layer.join("bin/su")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o4755, 1000, 2000, 1_600_000_000)
    );
    assert_eq!(
        std::fs::metadata(layer.join("bin")).unwrap().mode() & 0o7777,
        0o755
    );
}

fn store_layer(store: &ImageStore, bytes: &[u8]) -> LayerRef {
    let digest = store.write_blob_bytes(bytes).unwrap();
    LayerRef {
        digest,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        size: bytes.len() as u64,
    }
}

#[test]
fn a_layer_over_the_size_limit_is_refused_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&t.path().join("images"))
        .unwrap()
        .with_max_layer_size(64 * 1024);
    static BIG: [u8; 100 * 1024] = [7; 100 * 1024];
    let layer = store_layer(&store, &build(&[E::File("big", &BIG)]));
    let err = store.layer_dir(&layer).unwrap_err().to_string();
    assert!(
        err.contains("--max-layer-size") && err.contains("big"),
        "{err}"
    );
    assert!(
        err.contains(layer.digest.as_str()),
        "names the layer: {err}"
    );
    for d in ["layers", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(t.path().join("images").join(d))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{d} holds {left:?}");
    }
    // Also many small entries count (an inode bomb is a size bomb too).
    let many: Vec<E> = (0..32).map(|_| E::Dir("d")).collect();
    let r = unpack(
        &build(&many)[..],
        &t.path().join("images/tmp"),
        UnpackOptions {
            whiteouts: true,
            max_size: 16 * 4096,
        },
    );
    assert!(r.unwrap_err().to_string().contains("--max-layer-size"));
}

#[test]
fn many_starts_at_once_unpack_a_layer_exactly_once_and_never_see_it_half_done() {
    let t = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&t.path().join("images")).unwrap();
    // Big enough that an unpack takes a while: 400 files.
    let names: Vec<&'static str> = (0..400)
        .map(|i| &*Box::leak(format!("etc/nginx/conf{i}.d/file").into_boxed_str()))
        .collect();
    let mut entries: Vec<E> = names.iter().map(|n| E::File(n, b"server {}\n")).collect();
    entries.push(E::File("etc/nginx/nginx.conf", b"events {}\n"));
    let layer = store_layer(&store, &build(&entries));
    let dirs: Vec<PathBuf> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let d = store.layer_dir(&layer).unwrap();
                    // Whoever returns sees the whole layer.
                    assert_eq!(
                        std::fs::read(d.join("etc/nginx/nginx.conf")).unwrap(),
                        b"events {}\n"
                    );
                    assert_eq!(std::fs::read_dir(d.join("etc/nginx")).unwrap().count(), 401);
                    d
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(dirs.windows(2).all(|w| w[0] == w[1]));
    // Exactly one unpack: the directory's inode is the one the first finisher renamed in, and
    // no temporary directory is left.
    assert_eq!(
        std::fs::read_dir(t.path().join("images/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn an_unfinished_layer_directory_is_discarded_and_unpacked_again() {
    let t = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&t.path().join("images")).unwrap();
    let layer = store_layer(&store, &build(&[E::File("etc/app.conf", b"full")]));
    // What an older berth or a crash could leave: a rootfs without its marker, and one whose
    // marker names another digest.
    let base = t.path().join("images/layers").join(layer.digest.hex());
    for marker in [None, Some(Digest::of(b"other").to_string())] {
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("rootfs/etc")).unwrap();
        std::fs::write(base.join("rootfs/etc/half"), b"").unwrap();
        if let Some(m) = &marker {
            std::fs::write(base.join("complete"), m).unwrap();
        }
        let d = store.layer_dir(&layer).unwrap();
        assert_eq!(std::fs::read(d.join("etc/app.conf")).unwrap(), b"full");
        assert!(!d.join("etc/half").exists(), "marker {marker:?}");
    }
}

#[test]
fn the_store_is_private_to_root() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("images");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    ImageStore::open(&root).unwrap();
    assert_eq!(
        std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

/// One entry of a generated layer: any name, including `..`, `.` and absolute ones, which
/// the `tar` crate's builder would refuse to write (so headers are written here by hand).
#[derive(Debug, Clone)]
enum Gen {
    Dir(String),
    File(String, u8),
    Symlink(String, String),
    Hardlink(String, String),
    Whiteout(String),
    Opaque(String),
}

/// Where a generated link points: out by absolute and relative paths, at itself, inside.
/// `@V` stands for the victim's absolute path.
const TARGETS: &[&str] = &[
    "/",
    "..",
    "../..",
    "../victim",
    "../victim/sub",
    "@V",
    "@V/precious",
    "a",
    "l",
    "l/..",
    "a/b",
    ".",
];

fn gen_path() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    (
        any::<bool>(),
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "l", "..", ".", "x"]),
            1..4,
        ),
    )
        .prop_map(|(abs, cs)| {
            let p = cs.join("/");
            if abs { format!("/{p}") } else { p }
        })
}

fn gen_entry() -> impl proptest::strategy::Strategy<Value = Gen> {
    use proptest::prelude::*;
    let target = prop::sample::select(TARGETS.to_vec()).prop_map(String::from);
    prop_oneof![
        gen_path().prop_map(Gen::Dir),
        (gen_path(), any::<u8>()).prop_map(|(p, b)| Gen::File(p, b)),
        (gen_path(), target.clone()).prop_map(|(p, t)| Gen::Symlink(p, t)),
        (gen_path(), prop_oneof![gen_path(), target]).prop_map(|(p, t)| Gen::Hardlink(p, t)),
        gen_path().prop_map(Gen::Whiteout),
        gen_path().prop_map(Gen::Opaque),
    ]
}

/// A tar stream of `entries`, names and link targets written into the headers as given.
fn raw_tar(entries: &[Gen], victim: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (name, link, kind, data): (String, String, tar::EntryType, Vec<u8>) = match e {
            Gen::Dir(p) => (p.clone(), String::new(), tar::EntryType::Directory, vec![]),
            Gen::File(p, b) => (
                p.clone(),
                String::new(),
                tar::EntryType::Regular,
                vec![*b; 3],
            ),
            Gen::Symlink(p, t) => (
                p.clone(),
                t.replace("@V", victim),
                tar::EntryType::Symlink,
                vec![],
            ),
            Gen::Hardlink(p, t) => (
                p.clone(),
                t.replace("@V", victim),
                tar::EntryType::Link,
                vec![],
            ),
            Gen::Whiteout(p) => {
                let (dir, base) = p.rsplit_once('/').unwrap_or(("", p));
                let name = if dir.is_empty() {
                    format!(".wh.{base}")
                } else {
                    format!("{dir}/.wh.{base}")
                };
                (name, String::new(), tar::EntryType::Regular, vec![])
            }
            Gen::Opaque(p) => (
                format!("{p}/.wh..wh..opq"),
                String::new(),
                tar::EntryType::Regular,
                vec![],
            ),
        };
        let mut h = tar::Header::new_old();
        let old = h.as_old_mut();
        let n = name.as_bytes();
        old.name[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
        let l = link.as_bytes();
        old.linkname[..l.len().min(100)].copy_from_slice(&l[..l.len().min(100)]);
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

proptest::proptest! {
    // PROPTEST_CASES sets how many layers are tried: the default in the test command,
    // a million in `scripts/bench fuzz`.
    #![proptest_config(proptest::prelude::ProptestConfig {
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Generated entry sequences, unpacked for real as root, with whiteouts on and off:
    /// whatever is refused or applied, the victim beside the layer is exactly as it was and
    /// nothing appears outside the layer.
    #[test]
    fn generated_layers_never_reach_outside(
        entries in proptest::collection::vec(gen_entry(), 1..10),
        whiteouts in proptest::prelude::any::<bool>(),
    ) {
        let base = tempfile::tempdir_in("/dev/shm").unwrap();
        let victim = Victim::new(base.path());
        let before = victim.snapshot();
        let layer = base.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        let tar = raw_tar(&entries, &victim_path(base.path()));
        let opts = UnpackOptions { whiteouts, ..UnpackOptions::default() };
        let _ = unpack(&tar[..], &layer, opts);
        proptest::prop_assert_eq!(victim.snapshot(), before, "the victim changed");
        let mut names: Vec<_> = std::fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        proptest::prop_assert_eq!(names, vec!["layer".to_string(), "victim".to_string()]);
    }
}
