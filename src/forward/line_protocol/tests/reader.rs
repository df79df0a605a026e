//! A line protocol reader for the property tests, written from InfluxDB's parsing rules:
//! 1.x/2.x (`models/points.go`; behaviour checked on InfluxDB 1.6.7) and 3.x where it differs.

use crate::forward::line_protocol::FieldValue;

/// A line as read back.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    pub timestamp: i64,
}

/// Which InfluxDB's reading of backslashes to apply.
#[derive(Clone, Copy, Debug)]
pub enum Reader {
    /// 1.x and 2.x: `\,` `\ ` `\=` are escapes (also in a measurement); any other backslash,
    /// including `\\`, is kept as it is.
    V1,
    /// 3.x: as V1, but `\\` is one backslash, `\=` is no escape in a measurement, and a
    /// trailing backslash is an error.
    V3,
}

/// Reads one line (with its final newline) as InfluxDB would.
pub fn parse(text: &str, reader: Reader) -> Result<Parsed, String> {
    let line = text.strip_suffix('\n').ok_or("no final newline")?;
    if line.contains(['\n', '\r']) {
        return Err("raw newline or carriage return inside the line".into());
    }
    let chars: Vec<char> = line.chars().collect();

    // Measurement and tags: up to the first unescaped space. A backslash pairs with the
    // character after it, whatever that is (the 1.x scanner).
    let key_end = scan(&chars, 0, &[' ']);
    let key = split(&chars[..key_end], ',');
    let measurement = unescape(key[0], true, reader)?;
    let mut tags = Vec::new();
    for tag in &key[1..] {
        let eq = scan(tag, 0, &['=']);
        if eq == tag.len() {
            return Err(format!("tag without '=': {tag:?}"));
        }
        let (k, v) = (&tag[..eq], &tag[eq + 1..]);
        if k.is_empty() || v.is_empty() {
            return Err("empty tag key or value".into());
        }
        tags.push((unescape(k, false, reader)?, unescape(v, false, reader)?));
    }

    // Fields: key=value pairs separated by commas, up to the space before the timestamp.
    let mut fields = Vec::new();
    let mut i = key_end + 1;
    loop {
        let eq = scan(&chars, i, &['=', ' ', ',']);
        if chars.get(eq) != Some(&'=') || eq == i {
            return Err(format!("field without key or '=' at {i}"));
        }
        let key = unescape(&chars[i..eq], false, reader)?;
        let (value, end) = if chars.get(eq + 1) == Some(&'"') {
            let mut j = eq + 2;
            let mut s = String::new();
            loop {
                match chars.get(j) {
                    None => return Err("unterminated string".into()),
                    Some('"') => break,
                    Some('\\') => {
                        match chars.get(j + 1) {
                            Some('\\') => s.push('\\'),
                            Some('"') => s.push('"'),
                            // What this encoder means by them; InfluxDB keeps the two
                            // characters as they are.
                            Some('n') => s.push('\n'),
                            Some('r') => s.push('\r'),
                            Some(&c) => {
                                s.push('\\');
                                s.push(c);
                            }
                            None => return Err("unterminated string".into()),
                        }
                        j += 2;
                    }
                    Some(&c) => {
                        s.push(c);
                        j += 1;
                    }
                }
            }
            (FieldValue::Str(s), j + 1)
        } else {
            let end = (eq + 1..chars.len())
                .find(|&j| matches!(chars[j], ',' | ' '))
                .unwrap_or(chars.len());
            let text: String = chars[eq + 1..end].iter().collect();
            (parse_scalar(&text)?, end)
        };
        fields.push((key, value));
        match chars.get(end) {
            Some(',') => i = end + 1,
            Some(' ') => {
                i = end + 1;
                break;
            }
            _ => return Err("no timestamp".into()),
        }
    }
    let timestamp: String = chars[i..].iter().collect();
    let timestamp = timestamp
        .parse()
        .map_err(|e| format!("timestamp {timestamp:?}: {e}"))?;
    Ok(Parsed {
        measurement,
        tags,
        fields,
        timestamp,
    })
}

/// Index of the first character of `stops` at or after `from` that no backslash escapes.
fn scan(chars: &[char], from: usize, stops: &[char]) -> usize {
    let mut i = from;
    while i < chars.len() {
        if chars[i] == '\\' {
            i += 2;
        } else if stops.contains(&chars[i]) {
            return i;
        } else {
            i += 1;
        }
    }
    chars.len()
}

fn split(chars: &[char], separator: char) -> Vec<&[char]> {
    let mut parts = Vec::new();
    let mut rest = chars;
    loop {
        let at = scan(rest, 0, &[separator]);
        if at >= rest.len() {
            parts.push(rest);
            return parts;
        }
        parts.push(&rest[..at]);
        rest = &rest[at + 1..];
    }
}

fn unescape(chars: &[char], measurement: bool, reader: Reader) -> Result<String, String> {
    let escapes: &[char] = match (measurement, reader) {
        (true, Reader::V3) => &[',', ' '],
        _ => &[',', ' ', '='],
    };
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match (c, chars.get(i + 1)) {
            ('\\', Some(&n)) if escapes.contains(&n) => {
                out.push(n);
                i += 2;
            }
            ('\\', Some('\\')) if matches!(reader, Reader::V3) => {
                out.push('\\');
                i += 2;
            }
            ('\\', None) if matches!(reader, Reader::V3) => {
                return Err("trailing backslash".into());
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn parse_scalar(text: &str) -> Result<FieldValue, String> {
    let bad = |e: &dyn std::fmt::Display| format!("value {text:?}: {e}");
    if text == "true" || text == "false" {
        Ok(FieldValue::Bool(text == "true"))
    } else if let Some(n) = text.strip_suffix('i') {
        n.parse().map(FieldValue::Integer).map_err(|e| bad(&e))
    } else if let Some(n) = text.strip_suffix('u') {
        n.parse().map(FieldValue::UInteger).map_err(|e| bad(&e))
    } else if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == '.')
    {
        // Digits only: Rust would also accept `inf` and `NaN`, which InfluxDB does not.
        text.parse().map(FieldValue::Float).map_err(|e| bad(&e))
    } else {
        Err(bad(&"not a number"))
    }
}
