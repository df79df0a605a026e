//! Sensor tags from the source: its static `tags` from the config and those captured from the
//! topic by `topic_template`. They are announced to the pipeline the first time a sensor is
//! seen in a run (not with every reading), stored, and forwarded with the sensor's rollups.

use std::sync::Arc;

use crate::model::{FastMap, Reading, Tags};

/// Remembers which sensors were announced, so a message costs one map lookup.
#[derive(Debug, Default)]
pub struct TagAnnouncer {
    static_tags: Tags,
    captures: bool,
    known: FastMap<Arc<str>, ()>,
}

impl TagAnnouncer {
    /// `captures`: some mapping of the source captures tags from the topic.
    pub fn new(static_tags: &Tags, captures: bool) -> Self {
        TagAnnouncer {
            static_tags: static_tags.clone(),
            captures,
            known: FastMap::default(),
        }
    }

    /// Whether there is anything to announce at all (otherwise skip the per-message work).
    pub fn is_active(&self) -> bool {
        self.captures || !self.static_tags.is_empty()
    }

    /// Announces, into `out`, the tags of each sensor of `readings` (one decoded message) not
    /// announced before. `topic_tags` is called at most once, only when needed.
    pub fn announce(
        &mut self,
        readings: &[Reading],
        topic_tags: impl FnOnce() -> Vec<(Arc<str>, Arc<str>)>,
        out: &mut Vec<(Arc<str>, Arc<Tags>)>,
    ) {
        if !self.is_active() {
            return;
        }
        let mut topic_tags = Some(topic_tags);
        let mut captured: Option<Vec<(Arc<str>, Arc<str>)>> = None;
        let mut previous: Option<&Arc<str>> = None;
        for r in readings {
            let sensor = &r.series.sensor;
            if previous == Some(sensor) || self.known.contains_key(sensor) {
                previous = Some(sensor);
                continue;
            }
            previous = Some(sensor);
            let captured = captured.get_or_insert_with(|| match topic_tags.take() {
                Some(f) if self.captures => f(),
                _ => Vec::new(),
            });
            let mut tags = self.static_tags.clone();
            for (k, v) in captured.iter() {
                tags.insert(k.to_string(), v.to_string());
            }
            self.known.insert(sensor.clone(), ());
            out.push((sensor.clone(), Arc::new(tags)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Quality, SeriesKey};

    fn reading(sensor: &str, field: &str) -> Reading {
        Reading {
            series: SeriesKey::new(sensor, field),
            time: 0,
            value: 1.0,
            quality: Quality::GOOD,
        }
    }

    #[test]
    fn each_sensor_is_announced_once_with_static_and_topic_tags() {
        let static_tags: Tags = [("site".to_string(), "plant-3".to_string())].into();
        let mut a = TagAnnouncer::new(&static_tags, true);
        let mut out = Vec::new();
        let msg = [
            reading("p-1", "t"),
            reading("p-1", "p"),
            reading("p-2", "t"),
        ];
        let topic = || vec![(Arc::from("line"), Arc::from("l1"))];
        a.announce(&msg, topic, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(&*out[0].0, "p-1");
        assert_eq!(out[0].1.get("site").map(String::as_str), Some("plant-3"));
        assert_eq!(out[0].1.get("line").map(String::as_str), Some("l1"));
        out.clear();
        a.announce(&msg, || panic!("not needed: both known"), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn without_tags_nothing_is_done() {
        let mut a = TagAnnouncer::new(&Tags::new(), false);
        let mut out = Vec::new();
        a.announce(&[reading("p-1", "t")], || panic!("not needed"), &mut out);
        assert!(out.is_empty());
        assert!(!a.is_active());
    }
}
