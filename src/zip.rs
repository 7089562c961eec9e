//! A minimal zip writer (stored entries, no compression) so the page can hand the user one
//! download holding the adapter's files. Safetensors data barely compresses, so storing is fine.

/// A zip archive of `files` (name, contents), in the given order.
pub fn store(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let header = |out: &mut Vec<u8>, central: bool| {
            out.extend_from_slice(if central { &[0x50, 0x4b, 0x01, 0x02] } else { &[0x50, 0x4b, 0x03, 0x04] });
            if central {
                out.extend_from_slice(&20u16.to_le_bytes()); // made by: version 2.0
            }
            for field in [20u16, 0x0800, 0, 0, 0x21] {
                // version needed, flags (UTF-8 names), method (stored), time, date (1980-01-01)
                out.extend_from_slice(&field.to_le_bytes());
            }
            for field in [crc, data.len() as u32, data.len() as u32] {
                out.extend_from_slice(&field.to_le_bytes());
            }
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes()); // extra field length
            if central {
                for field in [0u16, 0, 0] {
                    // comment length, disk number, internal attributes
                    out.extend_from_slice(&field.to_le_bytes());
                }
                out.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                out.extend_from_slice(&offset.to_le_bytes());
            }
            out.extend_from_slice(name.as_bytes());
        };
        header(&mut out, false);
        out.extend_from_slice(data);
        header(&mut central, true);
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0]);
    let count = files.len() as u16;
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_known_string() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// Python's zipfile (present on the CI machine) must read the archive back intact.
    #[test]
    fn python_reads_the_archive() {
        let zip = store(&[("adapter_config.json", b"{}"), ("dir/b.bin", &[0u8, 1, 2, 255])]);
        let path = std::env::temp_dir().join(format!("webtune-zip-{}.zip", std::process::id()));
        std::fs::write(&path, &zip).unwrap();
        let script = "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
                      print(','.join(z.namelist())); print(list(z.read('dir/b.bin')))";
        let out = std::process::Command::new("python3").args(["-c", script]).arg(&path).output().expect("python3 runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "adapter_config.json,dir/b.bin\n[0, 1, 2, 255]\n");
    }
}
