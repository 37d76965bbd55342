//! U-Boot legacy image ("uImage") of type script, as `mkimage -A arm64 -O linux -T script -C none`
//! builds it: a 64-byte big-endian header with header and data CRC32s, then a length table
//! (one entry, zero-terminated) and the script text.
//!
//! Deterministic: the timestamp is 0 and there is nothing else variable.

const MAGIC: u32 = 0x2705_1956;
const OS_LINUX: u8 = 5;
const ARCH_ARM64: u8 = 22;
const TYPE_SCRIPT: u8 = 6;
const COMP_NONE: u8 = 0;
pub const HEADER_LEN: usize = 64;

/// Wraps `script` into a legacy script image named `name` (truncated to 31 bytes).
pub fn script_image(script: &[u8], name: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(script.len() + 8);
    data.extend_from_slice(&(script.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script);

    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    // 4..8 header CRC, filled last; 8..12 timestamp stays 0 for reproducible builds.
    h[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    // 16..20 load address and 20..24 entry point are 0 for scripts.
    h[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    h[28] = OS_LINUX;
    h[29] = ARCH_ARM64;
    h[30] = TYPE_SCRIPT;
    h[31] = COMP_NONE;
    let n = name.as_bytes();
    let n = &n[..n.len().min(31)];
    h[32..32 + n.len()].copy_from_slice(n);
    let hcrc = crc32fast::hash(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());

    let mut out = h.to_vec();
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_crcs() {
        let img = script_image(b"pxe get && pxe boot\n", "test");
        assert_eq!(&img[0..4], &MAGIC.to_be_bytes());
        let size = u32::from_be_bytes(img[12..16].try_into().unwrap()) as usize;
        assert_eq!(size, img.len() - HEADER_LEN);
        let dcrc = u32::from_be_bytes(img[24..28].try_into().unwrap());
        assert_eq!(dcrc, crc32fast::hash(&img[HEADER_LEN..]));
        let mut h = img[..HEADER_LEN].to_vec();
        let hcrc = u32::from_be_bytes(h[4..8].try_into().unwrap());
        h[4..8].fill(0);
        assert_eq!(hcrc, crc32fast::hash(&h));
        assert_eq!(&img[HEADER_LEN..HEADER_LEN + 8], &[0, 0, 0, 20, 0, 0, 0, 0]);
        assert_eq!(&img[32..36], b"test");
    }
}
