//! Which subscription a message belongs to (sans-IO): the first configured filter that
//! matches its topic, by the MQTT matching rules. Each subscription has its own decoder.

use anyhow::Context;

use crate::config::Subscription;
use crate::ingest::Decoder;

/// A subscription with its compiled mapping.
#[derive(Debug)]
pub struct Route {
    pub filter: String,
    pub decoder: Decoder,
}

/// The subscriptions of one source, in configuration order.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Whether some subscription's topic template captures tags.
    pub fn captures_tags(&self) -> bool {
        self.routes.iter().any(|r| r.decoder.captures_tags())
    }

    /// Compiles every subscription's mapping; fails naming the filter whose mapping is bad.
    pub fn new(subscriptions: &[Subscription]) -> anyhow::Result<Router> {
        let routes = subscriptions
            .iter()
            .map(|s| {
                let decoder = Decoder::new(&s.mapping)
                    .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.reason))
                    .with_context(|| format!("the mapping of subscription `{}`", s.filter))?;
                Ok(Route {
                    filter: s.filter.clone(),
                    decoder,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Router { routes })
    }

    /// The first subscription whose filter matches `topic`.
    pub fn route(&self, topic: &str) -> Option<&Route> {
        self.routes.iter().find(|r| topic_matches(&r.filter, topic))
    }
}

/// MQTT 3.1.1 topic matching: `+` is one level, a final `#` is this level and every one
/// below (`a/#` matches `a`), and a filter starting with a wildcard does not match a topic
/// starting with `$` (broker-internal topics such as `$SYS`).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter = filter.split('/');
    let mut topic = topic.split('/');
    loop {
        match (filter.next(), topic.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_the_mqtt_rules() {
        let cases = [
            ("plant/+/sensors/#", "plant/p1/sensors/s1/temp", true),
            ("plant/+/sensors/#", "plant/p1/sensors", true),
            ("plant/+/sensors/#", "plant/sensors/s1", false),
            ("plant/+", "plant/p1", true),
            ("plant/+", "plant/p1/x", false),
            ("plant/+", "plant/", true),
            ("#", "anything/at/all", true),
            ("#", "$SYS/broker/uptime", false),
            ("+/broker/uptime", "$SYS/broker/uptime", false),
            ("$SYS/#", "$SYS/broker/uptime", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a//b", "a//b", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(
                topic_matches(filter, topic),
                expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn the_first_matching_subscription_wins() {
        let sub = |filter: &str| Subscription {
            filter: filter.into(),
            qos: 1,
            mapping: Default::default(),
        };
        let router = Router::new(&[sub("plant/line1/#"), sub("plant/#")]).unwrap();
        assert_eq!(
            router.route("plant/line1/s").unwrap().filter,
            "plant/line1/#"
        );
        assert_eq!(router.route("plant/line2/s").unwrap().filter, "plant/#");
        assert!(router.route("other/s").is_none());
    }
}
