//! Small helpers for the server-rendered pages: HTML escaping, path-segment encoding, human
//! formats for values, durations and sizes, and the page skeleton with its inline CSS.
//!
//! Invariant: every piece of outside text (sensor ids, field names, source names, error
//! messages, rule names) reaches a page only through [`Esc`] or [`Attr`]; nothing here needs
//! an external asset, so the page works on a tablet with no uplink. The one script is ours,
//! embedded in the binary, and only adds live updates: without it a page reloads itself.

use std::fmt::{self, Display, Write};

use crate::model::{NS_PER_SEC, TimeNs};

/// Displays a string with the five HTML-special characters escaped, for element content and
/// quoted attribute values alike.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// Displays a string percent-encoded as one URL path segment, so that a sensor id holding
/// `/`, `?`, `#` or spaces still links to its own page. Only unreserved characters stay as
/// they are, so the result is also safe inside an HTML attribute.
pub struct Attr<'a>(pub &'a str);

impl Display for Attr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0.as_bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// The link to a sensor's page.
pub fn sensor_href(id: &str) -> String {
    format!("/sensors/{}", Attr(id))
}

/// A measured value with about four significant digits: enough to read a gauge, short enough
/// for a phone screen. Non-finite values are named, since they are stored and shown as such.
pub fn value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+inf" } else { "-inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A duration in the two largest units that matter ("3 d 4 h", "5 min 2 s", "42 s").
pub fn duration(ns: i64) -> String {
    let secs = ns.unsigned_abs() / NS_PER_SEC as u64;
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else {
        format!("{s} s")
    }
}

/// How long ago `then` was, seen from `now`; a time ahead of the gateway clock says so
/// rather than showing a negative age, because it usually means a wrong device clock.
pub fn age(now: TimeNs, then: TimeNs) -> String {
    if then > now + NS_PER_SEC {
        format!("{} ahead", duration(then - now))
    } else {
        format!("{} ago", duration(now.saturating_sub(then).max(0)))
    }
}

/// A count with thin spaces between thousands ("424 242"), easier to read at a glance.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3 + 4);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// A wall-clock time to the second, for people (the API keeps full precision).
pub fn clock(t: TimeNs) -> String {
    crate::model::format_time(t.div_euclid(NS_PER_SEC) * NS_PER_SEC)
}

/// A byte count in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Inline CSS: readable on a phone (fluid width, tables and charts scroll sideways) and on a
/// desktop. Inline rather than an asset so a page is readable even when it is the only thing
/// that loaded.
const CSS: &str = "\
body{font-family:system-ui,sans-serif;margin:0 auto;padding:.5rem 1rem;max-width:72rem;\
color:#1a1a1a;background:#fafafa;line-height:1.35}\
h1{font-size:1.4rem;margin:.4rem 0}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}\
.meta{color:#555;font-size:.9rem;display:flex;flex-wrap:wrap;gap:0 1rem}\
.meta span{white-space:nowrap}h3{font-size:1rem;margin:.8rem 0 .3rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd;white-space:nowrap}\
td.num,th.num,td.value{text-align:right;font-variant-numeric:tabular-nums}\
th{background:#eee}a{color:#0645ad}\
.critical{background:#fdd}.warning{background:#fff3cd}tr.cleared{background:none}\
.sev{font-weight:bold;text-transform:uppercase;font-size:.8rem}\
.ok{color:#176f2c}.bad{color:#b00020;font-weight:bold}.muted{color:#777}\
.err{color:#b00020;white-space:normal}tr.stale td.age,span.stale{color:#b00020;font-weight:bold}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;margin:0}\
dt{color:#555}dd{margin:0;font-variant-numeric:tabular-nums}\
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:1rem}\
header.top{display:flex;flex-wrap:wrap;align-items:baseline;gap:.2rem 1rem;\
border-bottom:1px solid #ddd;padding:.2rem 0 .4rem}\
header.top nav a{margin-right:.8rem;text-decoration:none;font-weight:600}\
header.top nav a[aria-current]{color:#1a1a1a;border-bottom:3px solid #0645ad}\
#stale{position:sticky;top:0;z-index:9;background:#b00020;color:#fff;font-weight:bold;\
padding:.5rem .8rem;margin:.4rem 0;border-radius:.3rem}#stale[hidden]{display:none}\
body.stale main{opacity:.6}\
form.filters{display:flex;flex-wrap:wrap;gap:.4rem .8rem;align-items:end;margin:.6rem 0}\
form.filters label{display:flex;flex-direction:column;font-size:.85rem;color:#555}\
form.filters input,form.filters select,form.filters button{font:inherit;padding:.2rem .3rem}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(22rem,1fr));gap:.5rem 1rem}\
.chart-wrap{overflow-x:auto}.chart-wrap h4{margin:.3rem 0;font-size:.9rem;font-weight:600}\
svg.chart{width:100%;min-width:26rem;height:auto;background:#fff;display:block}\
svg.chart text{font-size:12px;fill:#555}svg.chart .axes line{stroke:#e4e4e4}\
svg.chart .frame{fill:none;stroke:#bbb}svg.chart .raw{fill:none;stroke:#0645ad;stroke-width:1.5}\
svg.chart .dot{fill:#0645ad}svg.chart .band{fill:#0645ad;fill-opacity:.2;stroke:none}\
svg.chart .mean{fill:none;stroke:#0645ad;stroke-width:1.5}\
svg.chart .episode{fill:#e0a800;fill-opacity:.25}svg.chart .episode.critical{fill:#b00020}\
svg.chart .episode.active{fill-opacity:.35}\
@media(max-width:40rem){body{padding:.25rem .5rem}th,td{padding:.2rem .3rem}\
svg.chart{min-width:20rem}}";

/// Our own script for live updates (`/assets/app.js`): fetches the `<main>` of the page it
/// runs on every few seconds and swaps it in, and shows the stale banner when that fails or
/// the data is old. The pages work without it (they then reload themselves).
pub const APP_JS: &str = include_str!("app.js");

/// Version tag of [`APP_JS`] in its URL, so that the asset can be cached for a long time and
/// a new build still loads its own script.
pub const APP_JS_VERSION: u64 = fnv1a(APP_JS.as_bytes());

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The pages in the navigation bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Devices,
    Events,
    /// A page that is none of them (a sensor, an error).
    Other,
}

/// What makes a page live: when its data was rendered and whether the server already knows
/// it is stale.
#[derive(Clone, Debug)]
pub struct Live {
    /// Gateway clock when the page was rendered.
    pub generated_at: TimeNs,
    /// Age of the pipeline's live snapshot when the page was rendered.
    pub snapshot_age_ns: i64,
    /// Why the data shown is stale (shown in the banner), `None` when it is fresh.
    pub stale: Option<String>,
}

/// Seconds between live updates (and between reloads without JavaScript).
pub const REFRESH_SECS: u32 = 5;
/// The script shows the stale banner when no update succeeded for this long, even before a
/// request fails (a request that hangs is caught here).
const CLIENT_STALE_AFTER_MS: u32 = 15_000;

/// The live part of a page: `<main id="main">` with the render time and the staleness as
/// attributes. It is also the whole answer to a partial request.
pub fn main_element(live: &Live, content: &str) -> String {
    let mut out = String::with_capacity(content.len() + 256);
    let _ = write!(
        out,
        "<main id=\"main\" data-generated-at=\"{}\" data-snapshot-age-ms=\"{}\" data-stale=\"{}\"",
        Esc(&crate::model::format_time(live.generated_at)),
        live.snapshot_age_ns.max(0) / 1_000_000,
        live.stale.is_some(),
    );
    if let Some(reason) = &live.stale {
        let _ = write!(out, " data-stale-reason=\"{}\"", Esc(reason));
    }
    out.push('>');
    out.push_str(content);
    out.push_str("</main>");
    out
}

/// A whole page: the head with the CSS, the navigation, `controls` (forms that live updates
/// must not replace while someone types) and `main`. With `live`, the page updates itself:
/// through the script, or by reloading every [`REFRESH_SECS`] without JavaScript; the stale
/// banner is rendered visible when the server already knows the data is stale.
pub fn page(
    title: &str,
    nav: Nav,
    gateway_id: &str,
    live: Option<&Live>,
    controls: &str,
    content: &str,
) -> String {
    let mut out = String::with_capacity(content.len() + CSS.len() + 2048);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if live.is_some() {
        let _ = write!(
            out,
            "<noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\"></noscript>"
        );
    }
    let _ = write!(
        out,
        "<title>{}</title><style>{CSS}</style></head>",
        Esc(title)
    );
    let stale = live.and_then(|l| l.stale.as_deref());
    match live {
        Some(_) => {
            let _ = write!(
                out,
                "<body class=\"{}\" data-refresh-ms=\"{}\" data-stale-after-ms=\"{CLIENT_STALE_AFTER_MS}\">",
                if stale.is_some() {
                    "live stale"
                } else {
                    "live"
                },
                REFRESH_SECS * 1_000,
            );
        }
        None => out.push_str("<body>"),
    }
    out.push_str("<header class=\"top\"><nav>");
    for (item, href, name) in [
        (Nav::Overview, "/", "Overview"),
        (Nav::Devices, "/devices", "Devices"),
        (Nav::Events, "/events", "Events"),
    ] {
        let current = if item == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(out, "<a href=\"{href}\"{current}>{name}</a>");
    }
    out.push_str("</nav>");
    if !gateway_id.is_empty() {
        let _ = write!(
            out,
            "<span class=\"muted\">gateway {}</span>",
            Esc(gateway_id)
        );
    }
    out.push_str("</header>");
    if let Some(live) = live {
        let _ = write!(
            out,
            "<div id=\"stale\" role=\"alert\"{}>{}</div>",
            if stale.is_some() { "" } else { " hidden" },
            Esc(&format!("Data is stale — {}", stale.unwrap_or("no update"))),
        );
        out.push_str(controls);
        out.push_str(&main_element(live, content));
        let _ = write!(
            out,
            "<script src=\"/assets/app.js?v={APP_JS_VERSION:016x}\" defer></script>"
        );
    } else {
        out.push_str(controls);
        out.push_str("<main id=\"main\">");
        out.push_str(content);
        out.push_str("</main>");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_every_html_special_character() {
        let hostile = "<script>alert('x')</script>&\"";
        assert_eq!(
            Esc(hostile).to_string(),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(Esc("plain-id_1").to_string(), "plain-id_1");
    }

    #[test]
    fn sensor_links_encode_slashes_and_quotes_as_one_path_segment() {
        assert_eq!(
            sensor_href("line 1/p\"101?"),
            "/sensors/line%201%2Fp%22101%3F"
        );
        assert_eq!(sensor_href("p-101"), "/sensors/p-101");
        assert_eq!(sensor_href("é"), "/sensors/%C3%A9");
    }

    #[test]
    fn values_keep_about_four_significant_digits() {
        assert_eq!(value(71.2345), "71.23");
        assert_eq!(value(0.00042), "0.00042");
        assert_eq!(value(12_345.6), "12346");
        assert_eq!(value(3.0), "3");
        assert_eq!(value(-0.5), "-0.5");
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn durations_use_the_two_largest_units() {
        assert_eq!(duration(42 * NS_PER_SEC), "42 s");
        assert_eq!(duration(302 * NS_PER_SEC), "5 min 2 s");
        assert_eq!(duration(7_500 * NS_PER_SEC), "2 h 5 min");
        assert_eq!(duration(100_000 * NS_PER_SEC), "1 d 3 h");
        assert_eq!(age(10 * NS_PER_SEC, 100 * NS_PER_SEC), "1 min 30 s ahead");
        assert_eq!(age(100 * NS_PER_SEC, 90 * NS_PER_SEC), "10 s ago");
    }

    #[test]
    fn counts_group_thousands_and_clocks_drop_fractions() {
        assert_eq!(count(424_242), "424\u{202f}242");
        assert_eq!(count(1_000_000), "1\u{202f}000\u{202f}000");
        assert_eq!(count(999), "999");
        assert_eq!(clock(1_500_000_000), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn live_pages_reload_without_javascript_and_load_the_script() {
        let live = Live {
            generated_at: 1_500_000_000,
            snapshot_age_ns: 2_500_000_000,
            stale: None,
        };
        let p = page("t", Nav::Devices, "gw", Some(&live), "", "<p>x</p>");
        assert!(p.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"));
        assert!(p.contains(&format!("/assets/app.js?v={APP_JS_VERSION:016x}")));
        assert!(p.contains("<a href=\"/devices\" aria-current=\"page\">Devices</a>"));
        assert!(p.contains("<div id=\"stale\" role=\"alert\" hidden>"));
        assert!(p.contains(
            "<main id=\"main\" data-generated-at=\"1970-01-01T00:00:01.5Z\" \
             data-snapshot-age-ms=\"2500\" data-stale=\"false\"><p>x</p></main>"
        ));
        assert!(p.contains("<body class=\"live\""));

        let still = page("<x>", Nav::Other, "gw", None, "", "");
        assert!(!still.contains("refresh") && !still.contains("app.js"));
        assert!(still.contains("<title>&lt;x&gt;</title>"));
    }

    #[test]
    fn a_page_the_server_knows_is_stale_shows_the_banner_without_javascript() {
        let live = Live {
            generated_at: 0,
            snapshot_age_ns: 0,
            stale: Some("the <pipeline> stopped".into()),
        };
        let p = page("t", Nav::Overview, "gw", Some(&live), "", "");
        assert!(p.contains(
            "<div id=\"stale\" role=\"alert\">Data is stale — the &lt;pipeline&gt; stopped</div>"
        ));
        assert!(p.contains("<body class=\"live stale\""));
        assert!(
            p.contains("data-stale=\"true\" data-stale-reason=\"the &lt;pipeline&gt; stopped\"")
        );
    }
}
