//! User-agent parsing into the plugin's `deviceType` / `browserName` / `osName` fields, using
//! woothee's maintained dataset.

/// Parsed device description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `desktop`, `mobile`, `tablet`, `bot` or `unknown`.
    pub device_type: String,
    /// Browser with its major version when known, e.g. "Chrome 143".
    pub browser_name: String,
    /// OS with its version when known, e.g. "macOS 10.15.7".
    pub os_name: String,
}

/// The browser family of an agent (`Chrome`, `Firefox`, `Safari`, …; `Unknown` when it names
/// none; a script is its own family, e.g. `HTTP Library curl`).
pub fn family(ua: &str) -> String {
    family_of(&parse(ua).browser_name)
}

/// The family part of a parsed `browser_name` ("Chrome 143" → "Chrome").
pub fn family_of(browser_name: &str) -> String {
    match browser_name.rsplit_once(' ') {
        Some((name, version)) if version.bytes().all(|b| b.is_ascii_digit()) && !version.is_empty() => name.into(),
        _ if browser_name.is_empty() => "Unknown".into(),
        _ => browser_name.into(),
    }
}

pub fn parse(ua: &str) -> Device {
    let unknown =
        || Device { device_type: "unknown".into(), browser_name: "Unknown".into(), os_name: "Unknown".into() };
    if ua.is_empty() {
        return unknown();
    }
    let Some(r) = woothee::parser::Parser::new().parse(ua) else { return unknown() };
    let tablet = r.os == "iPad" || (r.os == "Android" && !ua.contains("Mobile")) || ua.contains("Tablet");
    let device_type = match r.category {
        "pc" => "desktop",
        "crawler" => "bot",
        "smartphone" | "mobilephone" if tablet => "tablet",
        "smartphone" | "mobilephone" => "mobile",
        "appliance" => "tablet",
        _ => "unknown",
    };
    let browser = if r.name == "UNKNOWN" { "Unknown" } else { r.name };
    let major = r.version.split('.').next().filter(|v| !v.is_empty() && *v != "UNKNOWN");
    let browser_name = match major {
        Some(m) if browser != "Unknown" && browser != "Safari" => format!("{browser} {m}"),
        _ => browser.to_string(),
    };
    let os = match r.os {
        "Mac OSX" => "macOS",
        "iPhone" | "iPad" | "iPod" => "iOS",
        "UNKNOWN" => "Unknown",
        other => other,
    };
    let ver = r.os_version.trim();
    let os_name = if ver.is_empty() || ver == "UNKNOWN" || os == "Unknown" {
        os.to_string()
    } else if os == "iOS" {
        // woothee gives "17.1.2"; the plugin shows the major version.
        format!("iOS {}", ver.split('.').next().unwrap_or(ver))
    } else {
        format!("{os} {ver}")
    };
    Device { device_type: device_type.into(), browser_name, os_name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_agents() {
        let cases = [
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/143.0.0.0 Safari/537.36",
                ("desktop", "Chrome 143", "macOS 10.15.7"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                ("mobile", "Safari", "iOS 17"),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
                ("tablet", "Safari", "iOS 16"),
            ),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", ("bot", "Googlebot", "Unknown")),
            ("", ("unknown", "Unknown", "Unknown")),
        ];
        for (ua, (t, b, o)) in cases {
            let d = parse(ua);
            assert_eq!((d.device_type.as_str(), d.browser_name.as_str(), d.os_name.as_str()), (t, b, o), "{ua}");
        }
    }

    #[test]
    fn families_drop_the_version() {
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert_eq!(family(chrome), "Chrome");
        assert_eq!(family("curl/8.5.0"), "HTTP Library curl", "a script is a family of its own");
        assert_eq!(family(""), "Unknown");
        assert_eq!(family_of("Chrome 143"), "Chrome");
        assert_eq!(family_of("Internet Explorer 11"), "Internet Explorer");
        assert_eq!(family_of("Safari"), "Safari");
        assert_eq!(family_of(""), "Unknown");
    }
}
