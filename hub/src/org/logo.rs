//! Unit logos: PNG or JPEG images of at least 512 x 512 pixels, checked from their headers.

use serde::{Deserialize, Serialize};

/// Smallest logo side, in pixels.
pub const MIN_LOGO_SIDE: u32 = 512;
/// Largest logo file, in bytes.
pub const MAX_LOGO_BYTES: usize = 2 << 20;

/// A unit's logo, as the event log records it (the bytes are stored apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Logo {
    /// `png` or `jpeg`.
    pub format: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// Why an image is not accepted as a logo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoError {
    /// Neither PNG nor JPEG, or a damaged header.
    #[error("not a PNG or JPEG image")]
    NotAnImage,
    /// Smaller than 512 x 512.
    #[error("the image is {width} x {height} pixels; a logo needs at least 512 x 512")]
    TooSmall {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// Larger than the file limit.
    #[error("the file is {0} bytes; a logo may have at most 2 MiB")]
    TooLarge(usize),
}

/// Reads the format and size of a PNG or JPEG image and checks it is a usable logo.
pub fn check_logo(bytes: &[u8]) -> Result<(&'static str, u32, u32), LogoError> {
    if bytes.len() > MAX_LOGO_BYTES {
        return Err(LogoError::TooLarge(bytes.len()));
    }
    let (format, width, height) = png_size(bytes)
        .map(|(w, h)| ("png", w, h))
        .or_else(|| jpeg_size(bytes).map(|(w, h)| ("jpeg", w, h)))
        .ok_or(LogoError::NotAnImage)?;
    if width < MIN_LOGO_SIDE || height < MIN_LOGO_SIDE {
        return Err(LogoError::TooSmall { width, height });
    }
    Ok((format, width, height))
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// PNG: signature, then the IHDR chunk first, holding width and height.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let (width, height) = (be32(&bytes[16..20]), be32(&bytes[20..24]));
    (width > 0 && height > 0).then_some((width, height))
}

/// JPEG: SOI, then segments until a start-of-frame marker, which holds height and width.
fn jpeg_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return None;
    }
    let mut at = 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return None;
        }
        let marker = bytes[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame {
            if at + 9 > bytes.len() {
                return None;
            }
            let height = u32::from(u16::from_be_bytes([bytes[at + 5], bytes[at + 6]]));
            let width = u32::from(u16::from_be_bytes([bytes[at + 7], bytes[at + 8]]));
            return (width > 0 && height > 0).then_some((width, height));
        }
        if len < 2 {
            return None;
        }
        at += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        bytes
    }

    fn jpeg(width: u16, height: u16) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xD8];
        bytes.extend_from_slice(&[0xFF, 0xE0, 0, 4, 0, 0]); // an APP0 segment to skip
        bytes.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8]);
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&[1, 1, 0x11, 0]);
        bytes
    }

    #[test]
    fn png_and_jpeg_sizes_are_read_from_their_headers() {
        assert_eq!(check_logo(&png(512, 600)), Ok(("png", 512, 600)));
        assert_eq!(check_logo(&jpeg(1024, 768)), Ok(("jpeg", 1024, 768)));
    }

    #[test]
    fn small_damaged_or_other_images_are_refused() {
        assert_eq!(
            check_logo(&png(511, 900)),
            Err(LogoError::TooSmall { width: 511, height: 900 })
        );
        assert_eq!(
            check_logo(&jpeg(512, 100)),
            Err(LogoError::TooSmall { width: 512, height: 100 })
        );
        assert_eq!(check_logo(b"GIF89a...."), Err(LogoError::NotAnImage));
        assert_eq!(check_logo(&png(512, 512)[..20]), Err(LogoError::NotAnImage));
        assert_eq!(check_logo(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 1]), Err(LogoError::NotAnImage));
        assert!(matches!(check_logo(&vec![0; MAX_LOGO_BYTES + 1]), Err(LogoError::TooLarge(_))));
    }
}
