//! The TFTP router: turns a requested path into bytes, by asking the core. Rendered configs for
//! every path U-Boot and GRUB try (docs/firmware.md#u-boot-pxelinux-lookup,
//! docs/firmware.md#grub-config-lookup), the U-Boot script image, bootloader binaries,
//! versioned artifacts, and a read-only fallback file root.
//!
//! No policy here: what a machine gets is `decide`'s; this file only gathers the client's facts
//! (path, source address → MAC, what it said in DHCP) and fetches the bytes.

use super::files;
use super::identify;
use crate::artifacts::{self, Touches};
use crate::state::Shared;
use crate::tftp::{Content, Handler, ReadRequest, TftpError, TransferReport};
use appliance_core::arch::Firmware;
use appliance_core::boot_file::BootFile;
use appliance_core::catalog::DhcpMode;
use appliance_core::client::{classify_tftp, Client, PathFacts, TftpRequest};
use appliance_core::decide::{decide_boot_file, Decision, Outcome, Stage};
use appliance_core::render::{self, Format};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::info;

pub struct TftpRoutes {
    pub shared: Arc<Shared>,
    pub store: PathBuf,
    pub bootloaders: Option<PathBuf>,
    /// Read-only fallback root for any other file.
    pub root: Option<PathBuf>,
    pub touches: Arc<Touches>,
    /// `--dhcp` override; else the catalog's mode.
    pub mode: Option<DhcpMode>,
    /// GRUB images with our address written in, so a boot storm does not re-read and re-patch
    /// them per request.
    pub grub_images: GrubImages,
    /// Which machines are installed (they boot their disk under `after_install: local`).
    pub installs: Arc<crate::install_store::InstallStore>,
    /// What each request's `read` learned, for its `finished` (metrics, journal, in flight).
    pub pending: super::tftp_observe::Pending,
}

/// Patched GRUB images by file name, valid while the file's size and mtime and our address stay.
#[derive(Default)]
pub struct GrubImages(std::sync::Mutex<std::collections::HashMap<String, GrubImage>>);

struct GrubImage {
    stamp: (u64, Option<SystemTime>),
    address: Ipv4Addr,
    bytes: bytes::Bytes,
}

impl GrubImages {
    fn get(&self, path: &std::path::Path, name: &str, address: Ipv4Addr) -> std::io::Result<bytes::Bytes> {
        let meta = std::fs::metadata(path)?;
        let stamp = (meta.len(), meta.modified().ok());
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(img) = cache.get(name).filter(|i| i.stamp == stamp && i.address == address) {
            return Ok(img.bytes.clone());
        }
        let raw = std::fs::read(path)?;
        let bytes: bytes::Bytes = render::grub_image::patch(&raw, address).unwrap_or(raw).into();
        cache.insert(name.to_string(), GrubImage { stamp, address, bytes: bytes.clone() });
        Ok(bytes)
    }
}

fn peer_v4(req: &ReadRequest) -> Option<Ipv4Addr> {
    crate::observe::peer_v4(req.peer)
}

impl TftpRoutes {
    /// Everything we know about the client behind this request.
    fn client(&self, req: &ReadRequest, facts: &PathFacts, firmware: Firmware, now: Instant) -> Client {
        identify::client(&self.shared, &self.installs, &req.path, facts, firmware, peer_v4(req), now)
    }

    fn rendered(
        &self,
        req: &ReadRequest,
        facts: &PathFacts,
        stage: Stage,
        format: Format,
    ) -> Result<Content, TftpError> {
        if facts.ip_prefix {
            // A shortened hex address never names one machine.
            return Err(TftpError::not_found());
        }
        let (decision, text) =
            identify::config_file(&self.shared, &self.installs, &req.path, facts, (stage, format), peer_v4(req))
                .map_err(|e| TftpError::undefined(format!("render failed: {e}")))?;
        self.pending.decided(&self.shared.telemetry, req, &decision);
        log(req, &decision, if text.is_some() { "rendered" } else { "not found" });
        match text {
            Some(t) => Ok(Content::Bytes(t.into_bytes().into())),
            None => Err(TftpError::not_found()),
        }
    }

    fn mode(&self) -> DhcpMode {
        self.mode.unwrap_or(self.shared.catalog().settings().dhcp.mode)
    }

    /// A request for one of our boot program names. With `--dhcp off` the site's DHCP gives
    /// every machine the same name, so the name says nothing: decide from what the machine said
    /// in its (overheard) DHCP request and serve the right bytes under that name.
    fn boot_file(&self, req: &ReadRequest, named: BootFile) -> Result<Content, TftpError> {
        if self.mode() != DhcpMode::Off {
            return self.bootloader(named);
        }
        let now = Instant::now();
        let client = self.client(req, &PathFacts::default(), Firmware::Unknown, now);
        let catalog = self.shared.catalog();
        let decision = decide_boot_file(&catalog, &client, named);
        self.pending.decided(&self.shared.telemetry, req, &decision);
        log(req, &decision, "boot file");
        match &decision.outcome {
            Outcome::BootFile { file, .. } => {
                if let (true, Some(mac)) = (file.is_ipxe(), client.mac) {
                    self.shared.mark_chained(mac, now);
                }
                match file {
                    BootFile::UbootScript => self.uboot_script(),
                    f => self.bootloader(*f),
                }
            }
            Outcome::IpxeScript => render::ipxe_entry(&self.shared.server())
                .map(|s| Content::Bytes(s.into_bytes().into()))
                .map_err(|e| TftpError::undefined(e.to_string())),
            _ => Err(TftpError::access_violation("not served to this machine")),
        }
    }

    fn bootloader(&self, file: BootFile) -> Result<Content, TftpError> {
        let dir = self.bootloaders.as_ref().ok_or_else(TftpError::not_found)?;
        let name = file.file_name();
        if file.is_grub() {
            // Our address goes into the image (see render::grub_image).
            let path = files::resolve(dir, name).map_err(|_| TftpError::not_found())?;
            let bytes =
                self.grub_images.get(&path, name, self.shared.server().address).map_err(|_| TftpError::not_found())?;
            return Ok(Content::Bytes(bytes));
        }
        let (file, len) = files::open(dir, name).map_err(|_| TftpError::not_found())?;
        Ok(Content::File { file, len })
    }

    fn uboot_script(&self) -> Result<Content, TftpError> {
        render::uboot_script().map(|b| Content::Bytes(b.into())).map_err(|e| TftpError::undefined(e.to_string()))
    }
}

use appliance_core::log_text::escaped;

fn log(req: &ReadRequest, d: &Decision, what: &str) {
    let mac = d.machine.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
    info!(
        target: "appliance::tftp",
        mac = %mac,
        peer = %req.peer,
        path = %escaped(&req.path),
        outcome = ?d.outcome,
        target_rule = %d.target_rule,
        arch_rule = %d.arch_rule,
        "tftp {what}"
    );
}

impl Handler for TftpRoutes {
    fn read(&self, req: &ReadRequest) -> Result<Content, TftpError> {
        let content = self.resolve(req);
        if let Ok(c) = &content {
            self.pending.running(&self.shared.telemetry, req, c.len(), |ip| self.shared.mac_for_ip(ip));
        }
        content
    }

    fn finished(&self, report: &TransferReport) {
        // Artifacts are touched again at the end, so a long transfer keeps its version alive.
        if let TftpRequest::Artifact { profile, version, .. } = classify_tftp(&report.path) {
            self.touches.touch(&profile, &version, SystemTime::now());
        }
        self.pending.finished(&self.shared.telemetry, report, |ip| self.shared.mac_for_ip(ip));
    }
}

impl TftpRoutes {
    fn resolve(&self, req: &ReadRequest) -> Result<Content, TftpError> {
        match classify_tftp(&req.path) {
            TftpRequest::Pxelinux(f) => self.rendered(req, &f, Stage::Pxelinux, Format::Pxelinux),
            TftpRequest::GrubConfig(f) => self.rendered(req, &f, Stage::Grub, Format::Grub),
            // GRUB looks for module lists it already has; answer at once so it does not stall.
            TftpRequest::GrubAux { .. } => Err(TftpError::not_found()),
            TftpRequest::UbootScript => self.uboot_script(),
            TftpRequest::IpxeEntry => render::ipxe_entry(&self.shared.server())
                .map(|s| Content::Bytes(s.into_bytes().into()))
                .map_err(|e| TftpError::undefined(e.to_string())),
            TftpRequest::Artifact { profile, version, file } => {
                let (f, meta) =
                    artifacts::open(&self.store, &profile, &version, &file).map_err(|_| TftpError::not_found())?;
                self.touches.touch(&profile, &version, SystemTime::now());
                Ok(Content::File { file: f, len: meta.len() })
            }
            TftpRequest::Other(name) => match BootFile::from_file_name(&name) {
                Some(BootFile::UbootScript) => self.uboot_script(),
                Some(b) => self.boot_file(req, b),
                None => {
                    let root = self.root.as_ref().ok_or_else(TftpError::not_found)?;
                    match files::open(root, &name) {
                        Ok((file, len)) => Ok(Content::File { file, len }),
                        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                            Err(TftpError::access_violation("outside the served root"))
                        }
                        Err(_) => Err(TftpError::not_found()),
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance_core::explain::{client_from_query, Query};
    use appliance_core::mac::MacAddr;
    use std::io::Read;

    struct Fixture {
        routes: TftpRoutes,
        _dirs: (tempfile::TempDir, tempfile::TempDir, tempfile::TempDir),
    }

    /// The core's test config, with one more machine (the `machines.yaml` line `extra`).
    fn fixture_with(mode: DhcpMode, extra: &str) -> Fixture {
        let original = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/config");
        let config = tempfile::tempdir().unwrap();
        copy_dir(&original, config.path());
        let machines = config.path().join("machines.yaml");
        let text =
            std::fs::read_to_string(&machines).unwrap().replacen("machines:\n", &format!("machines:\n{extra}"), 1);
        std::fs::write(&machines, text).unwrap();
        let catalog = crate::config_dir::load(config.path(), None).unwrap();
        let server = appliance_core::render::ServerInfo::from_catalog(&catalog);
        let shared = Shared::new(Arc::new(catalog), server);
        let boot = tempfile::tempdir().unwrap();
        for name in ["undionly.kpxe", "ipxe.efi", "snponly.efi", "grubnetaa64.efi"] {
            std::fs::write(boot.path().join(name), format!("bytes of {name}")).unwrap();
        }
        // Signed programs whose bytes even contain our GRUB images' address placeholder: they
        // must still be served exactly as they are.
        for name in ["shimx64.efi", "grubx64.efi", "shimaa64.efi", "grubaa64.efi"] {
            std::fs::write(boot.path().join(name), signed_bytes(name)).unwrap();
        }
        let store = tempfile::tempdir().unwrap();
        let routes = TftpRoutes {
            shared,
            store: store.path().to_path_buf(),
            bootloaders: Some(boot.path().to_path_buf()),
            root: None,
            touches: Arc::new(Touches::new()),
            mode: Some(mode),
            grub_images: Default::default(),
            installs: Arc::new(crate::install_store::InstallStore::new(store.path())),
            pending: Default::default(),
        };
        Fixture { routes, _dirs: (boot, store, config) }
    }

    fn fixture(mode: DhcpMode) -> Fixture {
        fixture_with(mode, "")
    }

    fn signed_bytes(name: &str) -> Vec<u8> {
        let placeholder = appliance_core::render::grub_image::SERVER_PLACEHOLDER;
        format!("MZ signed {name} {placeholder} certificate table").into_bytes()
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
                copy_dir(&entry.path(), &dest);
            } else {
                std::fs::copy(entry.path(), dest).unwrap();
            }
        }
    }

    /// The site's DHCP names `undionly.kpxe` for everyone; we overheard this client's DISCOVER.
    fn fixed_boot_file(f: &Fixture, mac: &str, ip: [u8; 4], q: Query) -> String {
        named_file(f, mac, ip, q, "undionly.kpxe")
    }

    /// This client asks for `path`, after we overheard its DISCOVER.
    fn named_file(f: &Fixture, mac: &str, ip: [u8; 4], q: Query, path: &str) -> String {
        let mac = MacAddr::parse(mac).unwrap();
        let client = client_from_query(&Query { mac: Some(mac), ..q });
        f.routes.shared.remember_dhcp(&client, Instant::now());
        f.routes.shared.remember_ip(mac, Ipv4Addr::from(ip));
        let req = ReadRequest {
            path: path.into(),
            peer: (Ipv4Addr::from(ip), 2000).into(),
            local: "10.0.0.1:69".parse().unwrap(),
        };
        match f.routes.read(&req) {
            Ok(Content::Bytes(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Content::File { mut file, .. }) => {
                let mut s = String::new();
                file.read_to_string(&mut s).unwrap();
                s
            }
            Err(e) => format!("error {}", e.code),
        }
    }

    fn q(arch: u16, vendor: &str, user: Option<&str>) -> Query {
        Query {
            client_arch: Some(arch),
            vendor_class: Some(vendor.into()),
            user_class: user.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn off_mode_serves_each_firmware_its_binary_under_the_one_fixed_name() {
        let f = fixture(DhcpMode::Off);
        let uefi =
            fixed_boot_file(&f, "52:54:00:00:00:03", [10, 0, 0, 103], q(7, "PXEClient:Arch:00007:UNDI:003000", None));
        assert_eq!(uefi, "bytes of ipxe.efi");
        let bios =
            fixed_boot_file(&f, "52:54:00:00:00:01", [10, 0, 0, 101], q(0, "PXEClient:Arch:00000:UNDI:002001", None));
        assert_eq!(bios, "bytes of undionly.kpxe");
        let ipxe = fixed_boot_file(
            &f,
            "52:54:00:00:00:09",
            [10, 0, 0, 109],
            q(0, "PXEClient:Arch:00000:UNDI:002001", Some("iPXE")),
        );
        assert!(ipxe.starts_with("#!ipxe"), "{ipxe}");
        let arm =
            fixed_boot_file(&f, "52:54:00:00:00:05", [10, 0, 0, 105], q(11, "PXEClient:Arch:00011:UNDI:003000", None));
        assert_eq!(arm, "bytes of grubnetaa64.efi");
    }

    #[test]
    fn signed_programs_are_served_byte_for_byte() {
        // With --dhcp off a first program's name says nothing (the site gives everyone one), but
        // shim's GRUB is asked for by its own name.
        let cases = [
            (DhcpMode::Server, &["shimx64.efi", "grubx64.efi", "shimaa64.efi", "grubaa64.efi"][..]),
            (DhcpMode::Off, &["grubx64.efi", "grubaa64.efi"][..]),
        ];
        for (mode, names) in cases {
            let f = fixture(mode);
            let uefi = q(7, "PXEClient:Arch:00007:UNDI:003000", None);
            for name in names {
                let got = named_file(&f, "52:54:00:00:00:03", [10, 0, 0, 103], uefi.clone(), name);
                assert_eq!(got.as_bytes(), signed_bytes(name), "{mode} {name}");
            }
        }
    }

    #[test]
    fn off_mode_gives_a_shim_machine_shim_under_the_fixed_name_then_its_grub() {
        let f = fixture_with(DhcpMode::Off, "  \"52:54:00:00:00:20\": { profile: live, uefi_chain: shim }\n");
        let uefi = q(7, "PXEClient:Arch:00007:UNDI:003000", None);
        let first = fixed_boot_file(&f, "52:54:00:00:00:20", [10, 0, 0, 120], uefi.clone());
        assert_eq!(first.as_bytes(), signed_bytes("shimx64.efi"));
        let second = named_file(&f, "52:54:00:00:00:20", [10, 0, 0, 120], uefi, "grubx64.efi");
        assert_eq!(second.as_bytes(), signed_bytes("grubx64.efi"));
    }

    #[test]
    fn the_signed_grub_gets_its_machines_config_by_source_address() {
        let f = fixture_with(DhcpMode::Server, "  \"52:54:00:00:00:20\": { profile: live, uefi_chain: shim }\n");
        let uefi = q(7, "PXEClient:Arch:00007:UNDI:003000", None);
        for path in ["/grub/grub.cfg", "/debian-installer/amd64/grub/grub.cfg"] {
            let cfg = named_file(&f, "52:54:00:00:00:20", [10, 0, 0, 120], uefi.clone(), path);
            assert!(cfg.contains("(52:54:00:00:00:20): profile live, x86_64"), "{path}: {cfg}");
            assert!(cfg.contains("\tlinux /artifacts/live/"), "{path}: {cfg}");
        }
        // Its module lists are answered "not found" at once (TFTP error 1).
        let lst = named_file(&f, "52:54:00:00:00:20", [10, 0, 0, 120], uefi, "/grub/x86_64-efi/command.lst");
        assert_eq!(lst, "error 1");
    }

    #[test]
    fn server_mode_serves_the_named_file() {
        let f = fixture(DhcpMode::Server);
        let uefi =
            fixed_boot_file(&f, "52:54:00:00:00:03", [10, 0, 0, 103], q(7, "PXEClient:Arch:00007:UNDI:003000", None));
        assert_eq!(uefi, "bytes of undionly.kpxe");
    }
}
