//! Shared fixtures for the core's tests: the test catalog and DHCP clients as real firmware
//! identifies itself (option values from docs/firmware.md#dhcp-requests-by-client).
#![allow(dead_code)]

use appliance::catalog::Catalog;
use appliance::client::Client;
use appliance::explain::{client_from_query, Query};
use appliance::mac::MacAddr;
use std::path::PathBuf;

pub fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

pub fn catalog() -> Catalog {
    appliance::config::load(&data("config"), None).unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

pub fn mac(s: &str) -> MacAddr {
    MacAddr::parse(s).unwrap()
}

/// A DHCP client as identified from the DISCOVER it would send.
pub fn dhcp(m: &str, arch: Option<u16>, vendor: Option<&str>, user: Option<&str>) -> Client {
    client_from_query(&Query {
        mac: Some(mac(m)),
        client_arch: arch,
        vendor_class: vendor.map(String::from),
        user_class: user.map(String::from),
        path: None,
        chained: false,
    })
}

// The clients of docs/firmware.md#dhcp-requests-by-client.
pub fn seabios_ipxe_rom(m: &str) -> Client {
    dhcp(m, Some(0), Some("PXEClient:Arch:00000:UNDI:002001"), Some("iPXE"))
}
pub fn bios_stock_pxe(m: &str) -> Client {
    dhcp(m, Some(0), Some("PXEClient:Arch:00000:UNDI:002001"), None)
}
pub fn ovmf_pxe(m: &str) -> Client {
    dhcp(m, Some(7), Some("PXEClient:Arch:00007:UNDI:003000"), None)
}
pub fn ipxe_efi(m: &str) -> Client {
    dhcp(m, Some(7), Some("PXEClient:Arch:00007:UNDI:003010"), Some("iPXE"))
}
pub fn uboot(m: &str) -> Client {
    dhcp(m, Some(22), Some("U-Boot.armv8"), None)
}
pub fn uboot_efi_retry(m: &str) -> Client {
    dhcp(m, Some(11), Some("PXEClient:Arch:00011:UNDI:003000"), None)
}
pub fn armvirt_edk2(m: &str) -> Client {
    dhcp(m, Some(11), Some("PXEClient:Arch:00011:UNDI:003000"), None)
}
pub fn uefi_http_x64(m: &str) -> Client {
    dhcp(m, Some(16), Some("HTTPClient:Arch:00016:UNDI:003001"), None)
}
pub fn uefi_http_arm64(m: &str) -> Client {
    dhcp(m, Some(19), Some("HTTPClient:Arch:00019:UNDI:003001"), None)
}
pub fn os_client(m: &str) -> Client {
    dhcp(m, None, Some("dhcpcd-9.4.1:Linux-6.1.0:x86_64:GenuineIntel"), None)
}
