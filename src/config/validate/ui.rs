//! `[ui]`: the portal's title, the logo (a PNG or SVG file, read here: at start and at each
//! reload) and the accent colour.

use toml::Spanned;

use super::Validator;
use crate::config::raw::{pick, RawUi};
use crate::config::{Logo, UiConfig};

/// The largest logo file, in bytes.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;

impl Validator<'_> {
    /// `[ui]` against the built-in example's `d`.
    pub(super) fn ui(&mut self, ui: RawUi, d: RawUi) -> UiConfig {
        let logo = ui.logo.as_ref().and_then(|path| self.logo(path));
        let accent = ui.accent.as_ref().and_then(|colour| {
            let text = colour.get_ref();
            if valid_colour(text) {
                return Some(text.to_ascii_lowercase());
            }
            self.error(
                colour.span(),
                "ui.accent",
                format!("{text:?} is not a colour like \"#0b57d0\" or \"#05c\" (#rrggbb or #rgb)"),
            );
            None
        });
        UiConfig {
            title: pick!(ui, d, title),
            logo,
            accent,
        }
    }

    /// The logo file at `path`: read whole, at most [`MAX_LOGO_BYTES`], a PNG (by its
    /// signature) or an SVG (an `.svg` file with an `<svg` element).
    fn logo(&mut self, path: &Spanned<String>) -> Option<Logo> {
        let name = path.get_ref();
        let problem = match std::fs::read(name) {
            Err(e) => format!("cannot read the logo file {name}: {e}"),
            Ok(bytes) if bytes.len() > MAX_LOGO_BYTES => format!(
                "the logo file {name} is {} bytes; at most {MAX_LOGO_BYTES} (256 KiB) are allowed",
                bytes.len()
            ),
            Ok(bytes) => match logo_type(name, &bytes) {
                Some(content_type) => {
                    return Some(Logo {
                        bytes: bytes.into(),
                        content_type,
                    })
                }
                None => format!("the logo file {name} is neither a PNG nor an SVG image"),
            },
        };
        self.error(path.span(), "ui.logo", problem);
        None
    }
}

/// `#rgb` or `#rrggbb`.
fn valid_colour(text: &str) -> bool {
    text.strip_prefix('#')
        .is_some_and(|hex| matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The media type of a logo: PNG by its signature, SVG by its name and an `<svg` element.
fn logo_type(name: &str, bytes: &[u8]) -> Option<&'static str> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.starts_with(PNG) {
        return Some("image/png");
    }
    let svg = name.to_ascii_lowercase().ends_with(".svg")
        && String::from_utf8_lossy(bytes).contains("<svg");
    svg.then_some("image/svg+xml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_hash_and_three_or_six_hex_digits() {
        for good in ["#05c", "#0B57D0", "#abcdef"] {
            assert!(valid_colour(good), "{good}");
        }
        for bad in ["05c", "#05", "#0b57d0ff", "#ggg", "red", "#05c;}", ""] {
            assert!(!valid_colour(bad), "{bad}");
        }
    }

    #[test]
    fn a_logo_is_a_png_by_its_signature_or_an_svg_by_its_name_and_element() {
        assert_eq!(
            logo_type("a.bin", b"\x89PNG\r\n\x1a\nrest"),
            Some("image/png")
        );
        assert_eq!(
            logo_type("logo.SVG", b"<?xml version=\"1.0\"?><svg xmlns=\"\"/>"),
            Some("image/svg+xml")
        );
        assert_eq!(logo_type("logo.png", b"GIF89a"), None);
        assert_eq!(logo_type("logo.txt", b"<svg/>"), None);
    }
}
