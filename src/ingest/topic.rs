//! `topic_template`: a pattern over the MQTT topic, compiled once, matched segment by segment.
//!
//! A segment of the template is one of: a literal (matched exactly), `{name}` (captures one
//! segment), `+` (any one segment, not captured) or, as the last segment only, `#` (the rest of
//! the topic: zero or more segments, as in an MQTT filter). `{sensor_id}` and `{field}` are the
//! sensor id and the field name; every other capture is a tag. A placeholder is a whole
//! segment: `dev-{id}` is refused, so that what a capture holds is never a guess.

use std::sync::Arc;

/// What a `{name}` capture means.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Capture {
    SensorId,
    Field,
    Tag(Arc<str>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Capture(Capture),
    /// `+`
    Any,
    /// A final `#`.
    Rest,
}

/// A compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Template {
    segments: Vec<Segment>,
}

/// What a matching topic gave to the decoder (the tags are read by [`Template::tags`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TopicMatch<'t> {
    pub sensor_id: Option<&'t str>,
    pub field: Option<&'t str>,
}

impl Template {
    /// Compiles a template; the error is the reason, for `MappingError { key: "topic_template" }`.
    pub fn parse(template: &str) -> Result<Template, String> {
        let parts: Vec<&str> = template.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "+" => Segment::Any,
                "#" if i + 1 == parts.len() => Segment::Rest,
                "#" => return Err(format!("`{template}`: `#` must be the last segment")),
                p if p.starts_with('{') && p.ends_with('}') && p.len() >= 2 => {
                    let name = &p[1..p.len() - 1];
                    if name.is_empty() {
                        return Err(format!("`{template}`: a placeholder `{{}}` has no name"));
                    }
                    if name.contains(['{', '}']) {
                        return Err(format!("`{template}`: unbalanced braces in `{p}`"));
                    }
                    if names.contains(&name) {
                        return Err(format!("`{template}`: `{{{name}}}` appears twice"));
                    }
                    names.push(name);
                    Segment::Capture(match name {
                        "sensor_id" => Capture::SensorId,
                        "field" => Capture::Field,
                        tag => Capture::Tag(Arc::from(tag)),
                    })
                }
                p if p.contains(['{', '}']) => {
                    return Err(format!(
                        "`{template}`: `{p}`: a placeholder must be a whole segment, with balanced braces"
                    ));
                }
                p if p.contains(['+', '#']) => {
                    return Err(format!(
                        "`{template}`: `{p}`: `+` and `#` must be whole segments"
                    ));
                }
                p => Segment::Literal(p.into()),
            };
            segments.push(segment);
        }
        Ok(Template { segments })
    }

    /// Whether the template captures any tag (a placeholder other than `{sensor_id}` and
    /// `{field}`).
    pub fn has_tags(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Capture(Capture::Tag(_))))
    }

    /// Whether the template names `{sensor_id}`.
    pub fn has_sensor_id(&self) -> bool {
        self.segments.contains(&Segment::Capture(Capture::SensorId))
    }

    /// Matches `topic`; `None` when it does not match.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<TopicMatch<'t>> {
        let mut found = TopicMatch::default();
        let matched = self.walk(topic, |capture, value| match capture {
            Capture::SensorId => found.sensor_id = Some(value),
            Capture::Field => found.field = Some(value),
            Capture::Tag(_) => {}
        });
        matched.then_some(found)
    }

    /// The tag captures of a matching topic (empty when it does not match).
    pub fn tags(&self, topic: &str) -> Vec<(Arc<str>, Arc<str>)> {
        let mut tags = Vec::new();
        let matched = self.walk(topic, |capture, value| {
            if let Capture::Tag(name) = capture {
                tags.push((name.clone(), Arc::from(value)));
            }
        });
        if matched { tags } else { Vec::new() }
    }

    /// Walks the topic along the template, calling `capture` for each placeholder; returns
    /// whether the whole topic matched (captures seen before a mismatch are to be discarded).
    fn walk<'t>(&self, topic: &'t str, mut capture: impl FnMut(&Capture, &'t str)) -> bool {
        let mut rest = Some(topic);
        for segment in &self.segments {
            if *segment == Segment::Rest {
                return true;
            }
            let Some(remaining) = rest else {
                return false;
            };
            let (level, next) = match remaining.split_once('/') {
                Some((level, next)) => (level, Some(next)),
                None => (remaining, None),
            };
            match segment {
                Segment::Literal(text) if **text != *level => return false,
                Segment::Capture(c) => capture(c, level),
                _ => {}
            }
            rest = next;
        }
        rest.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(template: &str) -> Template {
        Template::parse(template).expect("valid template")
    }

    #[test]
    fn captures_name_the_sensor_field_and_tags() {
        let template = t("plant/{line}/sensors/{sensor_id}/{field}");
        let m = template
            .matches("plant/l1/sensors/p-101/temperature")
            .expect("matches");
        assert_eq!(m.sensor_id, Some("p-101"));
        assert_eq!(m.field, Some("temperature"));
        assert_eq!(
            template.tags("plant/l1/sensors/p-101/temperature"),
            vec![(Arc::from("line"), Arc::from("l1"))]
        );
    }

    #[test]
    fn a_topic_of_another_shape_does_not_match() {
        let template = t("plant/{line}/sensors/{sensor_id}");
        for topic in [
            "plant/l1/sensors",
            "plant/l1/sensors/p-101/extra",
            "factory/l1/sensors/p-101",
            "",
        ] {
            assert_eq!(template.matches(topic), None, "{topic}");
            assert!(template.tags(topic).is_empty());
        }
    }

    #[test]
    fn plus_matches_one_segment_and_hash_the_rest() {
        let template = t("+/{sensor_id}/#");
        assert!(template.matches("a/b").is_some());
        assert!(template.matches("a/b/c/d").is_some());
        assert!(template.matches("a").is_none());
        assert_eq!(template.matches("x/y/z").unwrap().sensor_id, Some("y"));
        assert!(t("#").matches("").is_some());
        assert!(t("#").matches("a/b").is_some());
    }

    #[test]
    fn empty_segments_are_segments() {
        let template = t("a/{sensor_id}/b");
        assert_eq!(template.matches("a//b").unwrap().sensor_id, Some(""));
        assert!(template.matches("a/b").is_none());
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (template, reason) in [
            ("a/{x", "whole segment"),
            ("a/x}", "whole segment"),
            ("a/{}", "no name"),
            ("a/{{x}}", "unbalanced"),
            ("{x}/{x}", "twice"),
            ("a/#/b", "last"),
            ("a/b+", "whole segments"),
            ("dev-{id}", "whole segment"),
        ] {
            let err = Template::parse(template).expect_err(template);
            assert!(err.contains(reason), "{template}: {err}");
        }
    }

    #[test]
    fn has_sensor_id_only_with_the_placeholder() {
        assert!(t("a/{sensor_id}").has_sensor_id());
        assert!(!t("a/{sensor}").has_sensor_id());
    }
}
