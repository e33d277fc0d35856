//! `cargo xtask dist`: what operators install, in `target/dist/`, all from one static release build.
//!
//! - `leakprobe`: the daemon and CLI, statically linked against musl (no `PT_INTERP`, no `DT_NEEDED`), stripped;
//! - `leakprobe_VERSION-1_amd64.deb`: built by cargo-deb from the same binary (`[package.metadata.deb]` of
//!   `leakprobe/Cargo.toml`): the unit, the sysusers and tmpfiles files, `/etc/leakprobe/leakprobe.toml`;
//! - `leakprobe-VERSION.oci.tar`: an OCI image archive made by buildah from scratch (no base image pulled):
//!   the binary with the file capabilities the `DaemonSet`'s non-root user needs, and busybox's `chown` for its
//!   init container. Named [`IMAGE`], as `deploy/kubernetes/daemonset.yaml` references it.
//!
//! [`check`] is what `cargo xtask test` asserts about them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use object::read::elf::{Dyn as _, ElfFile64, ProgramHeader as _};

use crate::{
    setup::{ToolEnv, check as run_checked, output},
    tasks::cargo,
};

/// The release binary's target: fully static, so it runs on any `x86_64` distribution.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The workspace version (xtask's is the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The image's name and tag, exactly as the `DaemonSet` names it.
pub const IMAGE: &str = concat!("leakprobe:", env!("CARGO_PKG_VERSION"));
/// The capabilities the image's binary carries as file capabilities (docs/deployment.md#least-privilege).
const FILE_CAPS: &str = "cap_sys_admin,cap_sys_ptrace,cap_dac_read_search=ep";
/// busybox-static: one static binary that is `chown` for the `DaemonSet`'s init container.
const BUSYBOX: &str = "/bin/busybox";

/// The artifacts of [`dist`].
pub struct Dist {
    pub binary: PathBuf,
    pub deb: PathBuf,
    pub image: PathBuf,
}

pub fn dist_dir(root: &Path) -> PathBuf {
    root.join("target").join("dist")
}

/// Builds the static release binary (`target/x86_64-unknown-linux-musl/dist/leakprobe`, the `dist` profile: the
/// release profile without debug information, which the shipped binary is stripped of anyway) and returns its
/// path. Every user of a release binary in the tasks (dist, the image, the .deb, the kernel matrix) takes this one.
pub fn static_binary(root: &Path, env: &ToolEnv) -> Result<PathBuf> {
    run_checked(cargo(root, env).args([
        "build",
        "--profile",
        "dist",
        "--locked",
        "--package",
        "leakprobe",
        "--target",
        MUSL_TARGET,
    ]))?;
    Ok(root.join("target").join(MUSL_TARGET).join("dist").join("leakprobe"))
}

/// Builds everything into `target/dist/` and checks it.
pub fn dist(root: &Path, env: &ToolEnv) -> Result<Dist> {
    let built = static_binary(root, env)?;
    let dir = dist_dir(root);
    fs::create_dir_all(&dir)?;
    let binary = dir.join("leakprobe");
    fs::copy(&built, &binary).with_context(|| format!("copying {}", built.display()))?;
    run_checked(Command::new("strip").arg(&binary))?;

    let deb = dir.join(format!("leakprobe_{VERSION}-1_amd64.deb"));
    run_checked(
        cargo(root, env)
            .args(["deb", "--package", "leakprobe", "--no-build", "--target", MUSL_TARGET, "--output"])
            .arg(&deb),
    )?;
    let image = dir.join(format!("leakprobe-{VERSION}.oci.tar"));
    build_image(&binary, &image)?;
    let dist = Dist { binary, deb, image };
    check(root, &dist)?;
    Ok(dist)
}

/// `buildah` with storage that works on this host whatever its init (no systemd, no user namespaces needed).
pub fn buildah() -> Command {
    let mut cmd = Command::new("buildah");
    cmd.env("BUILDAH_ISOLATION", "chroot");
    cmd
}

/// A from-scratch image: the binary with its file capabilities, `chown`, no shell, no libc.
fn build_image(binary: &Path, archive: &Path) -> Result<()> {
    let ctr = output(buildah().args(["from", "--name", "leakprobe-dist", "scratch"]))
        .or_else(|_| {
            // A container left by an interrupted run: start again.
            let _ = buildah().args(["rm", "leakprobe-dist"]).output();
            output(buildah().args(["from", "--name", "leakprobe-dist", "scratch"]))
        })?
        .trim()
        .to_owned();
    let built = (|| -> Result<()> {
        let mnt = PathBuf::from(output(buildah().args(["mount", &ctr]))?.trim());
        for dir in ["usr/bin", "bin", "etc", "tmp", "run/leakprobe", "var/lib/leakprobe"] {
            fs::create_dir_all(mnt.join(dir))?;
        }
        let target = mnt.join("usr/bin/leakprobe");
        fs::copy(binary, &target)?;
        // Kubernetes gives a non-root container's capabilities.add to its bounding and permitted sets only:
        // file capabilities make them effective (docs/deployment.md).
        run_checked(Command::new("setcap").arg(FILE_CAPS).arg(&target))?;
        fs::copy(BUSYBOX, mnt.join("bin/busybox")).context("busybox-static (setup installs it)")?;
        let _ = fs::remove_file(mnt.join("bin/chown"));
        std::os::unix::fs::symlink("busybox", mnt.join("bin/chown"))?;
        fs::write(mnt.join("etc/passwd"), "root:x:0:0:root:/:/bin/busybox\nleakprobe:x:65532:65532::/:/bin/busybox\n")?;
        fs::write(mnt.join("etc/group"), "root:x:0:\nleakprobe:x:65532:\n")?;
        run_checked(buildah().args(["umount", &ctr]))?;
        run_checked(buildah().args(["config", "--entrypoint", r#"["/usr/bin/leakprobe"]"#, "--cmd", "run"]).args([
            "--env",
            "PATH=/usr/bin:/bin",
            "--user",
            "65532:65532",
            "--label",
            &format!("org.opencontainers.image.version={VERSION}"),
            "--label",
            "org.opencontainers.image.title=leakprobe",
            &ctr,
        ]))?;
        run_checked(buildah().args(["commit", "--quiet", &ctr, &format!("localhost/{IMAGE}")]))?;
        Ok(())
    })();
    let _ = buildah().args(["rm", &ctr]).output();
    built?;
    let _ = fs::remove_file(archive);
    run_checked(buildah().args([
        "push",
        "--quiet",
        &format!("localhost/{IMAGE}"),
        &format!("oci-archive:{}:{IMAGE}", archive.display()),
    ]))
}

/// What the artifacts must be: a static binary, a .deb holding every file the unit needs, an image archive
/// named as the `DaemonSet` names it.
pub fn check(root: &Path, dist: &Dist) -> Result<()> {
    check_static(&dist.binary)?;
    let listing = output(Command::new("dpkg-deb").arg("-c").arg(&dist.deb))?;
    check_deb_listing(&listing)?;
    let conffiles = output(Command::new("dpkg-deb").arg("--info").arg(&dist.deb).arg("conffiles"))?;
    ensure!(conffiles.lines().any(|l| l == "/etc/leakprobe/leakprobe.toml"), "conffiles: {conffiles}");
    let index = output(Command::new("tar").arg("-xOf").arg(&dist.image).arg("index.json"))?;
    let refs = image_refs(&index)?;
    let manifest = fs::read_to_string(root.join("deploy/kubernetes/daemonset.yaml"))?;
    let images = daemonset_images(&manifest);
    ensure!(!images.is_empty(), "the DaemonSet names no image");
    for image in &images {
        ensure!(
            refs.iter().any(|r| r == image),
            "the DaemonSet's image {image} is not in the archive (holds {refs:?})"
        );
    }
    eprintln!(
        "dist: {} static ({} bytes), {} ({} files), {} ({})",
        dist.binary.display(),
        fs::metadata(&dist.binary)?.len(),
        dist.deb.display(),
        listing.lines().count(),
        dist.image.display(),
        refs.join(", ")
    );
    Ok(())
}

/// Fails unless the ELF file at `path` is statically linked: no interpreter, no needed shared library.
pub fn check_static(path: &Path) -> Result<()> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf =
        ElfFile64::<object::Endianness>::parse(&*data).with_context(|| format!("{} is no ELF", path.display()))?;
    let endian = elf.endian();
    for header in elf.elf_program_headers() {
        if header.p_type(endian) == object::elf::PT_INTERP {
            bail!("{} has an interpreter (PT_INTERP): it is dynamically linked", path.display());
        }
        if let Some(dynamic) = header.dynamic(endian, &*data)? {
            let needed = dynamic.iter().filter(|d| d.tag(endian) == object::elf::DT_NEEDED).count();
            ensure!(needed == 0, "{} needs {needed} shared libraries (DT_NEEDED)", path.display());
        }
    }
    Ok(())
}

/// The files the .deb must install (`dpkg-deb -c` prints them with a leading `.`).
const DEB_FILES: [&str; 6] = [
    "./usr/bin/leakprobe",
    "./usr/lib/systemd/system/leakprobe.service",
    "./usr/lib/sysusers.d/leakprobe.conf",
    "./usr/lib/tmpfiles.d/leakprobe.conf",
    "./etc/leakprobe/leakprobe.toml",
    "./usr/share/doc/leakprobe/deployment.md",
];

fn check_deb_listing(listing: &str) -> Result<()> {
    let paths: Vec<&str> = listing.lines().filter_map(|line| line.split_whitespace().nth(5)).collect();
    for want in DEB_FILES {
        ensure!(paths.contains(&want), "the .deb lacks {want}; it holds:\n{listing}");
    }
    Ok(())
}

/// The `org.opencontainers.image.ref.name` annotations of an OCI layout's `index.json`.
fn image_refs(index: &str) -> Result<Vec<String>> {
    let index: serde_json::Value = serde_json::from_str(index).context("index.json")?;
    let manifests = index["manifests"].as_array().context("index.json has no manifests")?;
    Ok(manifests
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_owned))
        .collect())
}

/// Every `image:` of a Kubernetes manifest.
fn daemonset_images(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .filter_map(|line| line.trim().strip_prefix("image:"))
        .map(|image| image.trim().trim_matches('"').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemonset_names_the_image_dist_builds() {
        let manifest = include_str!("../../deploy/kubernetes/daemonset.yaml");
        let images = daemonset_images(manifest);
        assert_eq!(images, [IMAGE, IMAGE], "the init container and the daemon");
    }

    #[test]
    fn a_listing_without_the_unit_is_refused() {
        let mut listing = String::new();
        for file in DEB_FILES {
            listing += "-rw-r--r-- root/root 1 2026-01-01 00:00 ";
            listing += file;
            listing += "\n";
        }
        assert!(check_deb_listing(&listing).is_ok());
        listing = listing.replace("leakprobe.service", "other.service");
        assert!(check_deb_listing(&listing).is_err());
    }

    #[test]
    fn the_build_host_binary_is_not_static() {
        // The xtask binary itself links glibc dynamically: the check must say so.
        let me = std::env::current_exe().expect("current exe");
        assert!(check_static(&me).is_err());
    }
}
