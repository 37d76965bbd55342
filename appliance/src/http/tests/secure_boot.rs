//! The Secure Boot chain over HTTP: the signed programs byte for byte, the signed GRUB's
//! config chosen by source address, and the boot image for UEFI HTTP Boot.

use super::*;

#[tokio::test]
async fn signed_programs_over_http_byte_for_byte_and_shims_double_slash() {
    let dir = tempfile::tempdir().unwrap();
    let placeholder = appliance_core::render::grub_image::SERVER_PLACEHOLDER;
    let signed = |name: &str| format!("MZ {name} {placeholder} signed").into_bytes();
    for name in ["shimx64.efi", "grubx64.efi", "shimaa64.efi", "grubaa64.efi"] {
        std::fs::write(dir.path().join(name), signed(name)).unwrap();
    }
    let s = TestServer::start(Fixture::new(), Some(dir.path().to_path_buf())).await;
    for (path, name) in [
        ("/shimx64.efi", "shimx64.efi"),
        ("//grubx64.efi", "grubx64.efi"),
        ("/grubx64.efi", "grubx64.efi"),
        ("//grubaa64.efi", "grubaa64.efi"),
    ] {
        let r = raw(s.addr, path).await;
        assert_eq!((r.status, &r.body), (200, &signed(name)), "{path}");
        assert_eq!(r.header("content-type"), Some("application/efi"), "{path}");
    }
    for probe in ["/revocations_sku.efi", "/revocations_sbat.efi", "/shim_certificate_0.efi", "//shimx64.efi"] {
        assert!(matches!(raw(s.addr, probe).await.status, 400 | 404), "{probe}");
    }
    s.stop().await;
}

/// The signed GRUB's config over HTTP: the machine behind the source address gets its own; the
/// module lists and an address nothing is known of get a 404.
#[tokio::test]
async fn the_signed_grubs_config_is_the_machine_at_the_source_address() {
    let s = TestServer::start(Fixture::new(), None).await;
    for path in ["/grub/grub.cfg", "/grub/x86_64-efi/command.lst"] {
        assert_eq!(curl(&[&s.url(path)]).await.status, 404, "nothing known of 127.0.0.1: {path}");
    }
    s.ctx.shared.remember_ip(MacAddr::parse(KNOWN_MAC).unwrap(), Ipv4Addr::LOCALHOST);
    let v = version_of(&s.catalog, "live", Arch::X86_64);
    for path in ["/grub/grub.cfg", "/debian-installer/amd64/grub/grub.cfg"] {
        let r = curl(&[&s.url(path)]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.text().contains(&format!("\tlinux /artifacts/live/{v}/vmlinuz console=ttyS0 hostname=node1")),
            "{}",
            r.text()
        );
    }
    for path in ["/grub/x86_64-efi/command.lst", "/grub/x86_64-efi/grub.cfg", "/debian-installer/amd64/linux"] {
        assert_eq!(curl(&[&s.url(path)]).await.status, 404, "{path}");
    }
    s.stop().await;
}

/// The boot image of a UEFI HTTP Boot client on the shim chain: HEAD gives the size the firmware
/// allocates its RAM disk by, GET the same bytes from the cache; mtools reads shim as the
/// removable-media program, the signed GRUB beside it, the machine's config and the kernel it
/// names; new programs make a new image that replaces the old one in the cache.
#[tokio::test]
async fn the_boot_image_is_a_fat_disk_with_shim_grub_config_and_kernel() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shimx64.efi"), b"MZ shim, signed").unwrap();
    std::fs::write(dir.path().join("grubx64.efi"), b"MZ grub, signed").unwrap();
    let fixture = Fixture::new();
    let settings = "server: { address: 127.0.0.1, http_port: 8080 }\ndhcp: { mode: proxy }\nuefi_chain: shim\n";
    fixture.write("appliance.yaml", settings.as_bytes());
    let machines = format!(
        "machines:\n  \"{KNOWN_MAC}\": {{ hostname: node1, arch: x86_64, profile: live }}\n  \
         \"52:54:00:12:34:57\": {{ hostname: plain, profile: live, uefi_chain: ipxe }}\n"
    );
    fixture.write("machines.yaml", machines.as_bytes());
    let s = TestServer::start(fixture, Some(dir.path().to_path_buf())).await;
    let url = s.url("/boot-image/52-54-00-12-34-56.x86_64.img");
    let head = curl(&["-I", &url]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/vnd.efi-img"));
    let get = curl(&[&url]).await;
    assert_eq!(get.status, 200);
    assert_eq!(head.header("content-length"), Some(get.body.len().to_string().as_str()));
    assert_eq!(head.header("etag"), get.header("etag"));
    let image = dir.path().join("image.img");
    std::fs::write(&image, &get.body).unwrap();
    let mtype = |path: &str| {
        let out = std::process::Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", image.to_str().unwrap(), &format!("::{path}")])
            .output()
            .expect("mtype (mtools)");
        assert!(out.status.success(), "mtype {path}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    assert_eq!(mtype("/EFI/BOOT/BOOTX64.EFI"), b"MZ shim, signed");
    assert_eq!(mtype("/EFI/BOOT/grubx64.efi"), b"MZ grub, signed");
    let v = version_of(&s.catalog, "live", Arch::X86_64);
    let config = String::from_utf8(mtype("/grub/grub.cfg")).unwrap();
    assert!(config.contains(&format!("\tlinux /artifacts/live/{v}/vmlinuz ")), "{config}");
    let kernel = curl(&[&s.artifact_url("live", Arch::X86_64, "vmlinuz")]).await;
    assert_eq!(mtype(&format!("/artifacts/live/{v}/vmlinuz")), kernel.body);

    std::fs::write(dir.path().join("shimx64.efi"), b"MZ shim, newer").unwrap();
    let newer = curl(&[&url]).await;
    assert_eq!(newer.status, 200);
    assert_ne!(newer.header("etag"), get.header("etag"));
    let cached: Vec<_> = std::fs::read_dir(&s.ctx.boot_images).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(cached.len(), 1, "{cached:?}");

    // Only the image DHCP would hand out: not for a machine on the ipxe chain, nor under
    // another architecture than its entry's, nor for one without shim.
    for bad in [
        "/boot-image/52-54-00-12-34-57.x86_64.img",
        "/boot-image/52-54-00-12-34-56.arm64.img",
        "/boot-image/52-54-00-12-34-56.riscv64.img",
        "/boot-image/52-54-00-12-34-56.x86_64",
        "/boot-image/nobody.img",
        "/boot-image/52-54-00-12-34-56.sparc.img",
    ] {
        assert_eq!(curl(&[&s.url(bad)]).await.status, 404, "{bad}");
    }
    s.stop().await;
}
