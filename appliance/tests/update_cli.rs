//! `concentrator update` as the release pipeline and an installer run it: make a bundle with the release
//! key, apply it to slot B of a gateway running slot A (image files stand in for the partitions), see
//! the trial set up, commit it from slot B; a bundle signed by another key is refused with nothing
//! written.

use std::path::Path;
use std::process::Command;

use concentrator_plugin_host::{generate_key_pem, Algorithm};

const CLI: &str = env!("CARGO_BIN_EXE_concentrator");

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(CLI).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn make_apply_status_commit_and_a_foreign_bundle_refused() {
    let dir = std::env::temp_dir().join(format!("update-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("boot")).unwrap();
    let (private, public) = generate_key_pem(Algorithm::EcdsaP256).unwrap();
    std::fs::write(dir.join("release.key"), private).unwrap();
    std::fs::write(dir.join("release.pub"), public).unwrap();
    let (other, _) = generate_key_pem(Algorithm::EcdsaP256).unwrap();
    std::fs::write(dir.join("other.key"), other).unwrap();
    // The release's root filesystem, as the image build makes it (mkfs.ext4 -d, label root-a).
    std::fs::create_dir_all(dir.join("rootdir/etc")).unwrap();
    std::fs::write(dir.join("rootdir/etc/os-release"), "VERSION=0.3.0\n").unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal", "-L", "root-a", "-d"])
        .arg(dir.join("rootdir"))
        .arg(dir.join("root.ext4"))
        .arg("400k")
        .output()
        .unwrap_or_else(|e| {
            panic!("mkfs.ext4 cannot run ({e}): install e2fsprogs (apt-get install e2fsprogs)")
        });
    assert!(
        mkfs.status.success(),
        "{}",
        String::from_utf8_lossy(&mkfs.stderr)
    );
    std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(dir.join("initrd"), b"initrd").unwrap();
    for slot in ["a", "b"] {
        std::fs::write(dir.join(format!("root-{slot}.img")), vec![0u8; 512 * 1024]).unwrap();
    }
    std::fs::write(
        dir.join("boot/config.txt"),
        concentrator_appliance::update::boot_config(concentrator_appliance::update::Slot::A),
    )
    .unwrap();
    let (boot, a, b) = (
        dir.join("boot"),
        dir.join("root-a.img"),
        dir.join("root-b.img"),
    );
    let slots = |running: &str| {
        vec![
            "--boot".to_string(),
            s(&boot).into(),
            "--slot-a".into(),
            s(&a).into(),
            "--slot-b".into(),
            s(&b).into(),
            "--running".into(),
            running.into(),
        ]
    };
    let make = |key: &str, out: &str| {
        run(&[
            "update",
            "make",
            "--key",
            s(&dir.join(key)),
            "--version",
            "0.3.0",
            "--root",
            s(&dir.join("root.ext4")),
            "--kernel",
            s(&dir.join("vmlinuz")),
            "--initrd",
            s(&dir.join("initrd")),
            "--out",
            s(&dir.join(out)),
        ])
    };
    let (ok, text) = make("release.key", "good.cub");
    assert!(ok && text.contains("version 0.3.0"), "{text}");
    let (ok, _) = make("other.key", "foreign.cub");
    assert!(ok);

    let mut args: Vec<String> = vec![
        "update".into(),
        "apply".into(),
        s(&dir.join("foreign.cub")).into(),
        "--trusted".into(),
        s(&dir.join("release.pub")).into(),
    ];
    args.extend(slots("a"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = run(&argv);
    assert!(!ok && text.contains("nothing was written"), "{text}");
    assert!(
        std::fs::read(&b).unwrap().iter().all(|&x| x == 0),
        "slot B untouched"
    );

    args[2] = s(&dir.join("good.cub")).into();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = run(&argv);
    assert!(ok && text.contains("written to slot B"), "{text}");
    assert!(
        text.contains("writing slot B: 0 % (0 of 0 MiB)") && text.contains("writing slot B: 100 %"),
        "progress: {text}"
    );
    let mut st: Vec<String> = vec!["update".into(), "status".into()];
    st.extend(slots("a"));
    let argv: Vec<&str> = st.iter().map(String::as_str).collect();
    let (_, text) = run(&argv);
    assert!(
        text.contains("boots slot A; a trial boot would try slot B")
            && text.contains("slot B: version 0.3.0")
            && text.contains("slot A: no version recorded"),
        "{text}"
    );

    let mut c: Vec<String> = vec!["update".into(), "commit".into()];
    c.extend(slots("b"));
    let argv: Vec<&str> = c.iter().map(String::as_str).collect();
    let (ok, text) = run(&argv);
    assert!(ok && text.contains("slot B is permanent"), "{text}");
    let argv: Vec<&str> = st.iter().map(String::as_str).collect();
    let (_, text) = run(&argv);
    assert!(
        text.contains("boots slot B; a trial boot would try none"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
