//! The multi-packet keys of an `icmp:` module (a meshprobe extension): `packets`,
//! `packet_interval` and `min_received`, their defaults, validation, and how `/config` shows them.
//!
//! The default, one packet, is exactly blackbox's probe; the keys then do not appear in `/config`.

use std::time::Duration;

use serde::Serialize;
use serde::ser::SerializeStruct;

use super::duration::{format_go_duration, parse_go_duration};

/// Echo requests one probe may send at most.
pub const MAX_PACKETS: u32 = 100;
/// The gap between a probe's packets when `packet_interval` is not set.
pub const DEFAULT_PACKET_INTERVAL: Duration = Duration::from_millis(100);
/// Bounds for `packet_interval`.
pub const MIN_PACKET_INTERVAL: Duration = Duration::from_millis(1);
pub const MAX_PACKET_INTERVAL: Duration = Duration::from_secs(10);

/// How many echo requests a probe sends, how far apart, and how many replies make it a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    pub packets: u32,
    pub packet_interval: Duration,
    pub min_received: u32,
}

impl Default for Burst {
    fn default() -> Self {
        Burst {
            packets: 1,
            packet_interval: DEFAULT_PACKET_INTERVAL,
            min_received: 1,
        }
    }
}

impl Burst {
    /// True when the probe sends more than one packet (the multi-packet families are exported).
    pub fn is_multi(&self) -> bool {
        self.packets > 1
    }

    /// From the first packet's send to the last one's.
    pub fn span(&self) -> Duration {
        self.packet_interval * self.packets.saturating_sub(1)
    }

    /// Whether the whole burst fits a probe timeout, leaving the last packet time to come back.
    pub fn fits(&self, timeout: Duration) -> bool {
        !self.is_multi() || self.span() < timeout
    }

    /// Validates the raw keys of one module (`timeout` is the module's, zero when unset).
    pub fn validate(
        packets: Option<i64>,
        packet_interval: Option<&str>,
        min_received: Option<i64>,
        module_timeout: Duration,
    ) -> Result<Burst, String> {
        let mut burst = Burst::default();
        if let Some(count) = packets {
            burst.packets = u32::try_from(count)
                .ok()
                .filter(|n| (1..=MAX_PACKETS).contains(n))
                .ok_or_else(|| {
                    format!("field \"icmp.packets\": {count} is not between 1 and {MAX_PACKETS}")
                })?;
        }
        if let Some(text) = packet_interval {
            let interval = parse_go_duration(text)
                .map_err(|e| format!("field \"icmp.packet_interval\": {e}"))?;
            if !(MIN_PACKET_INTERVAL..=MAX_PACKET_INTERVAL).contains(&interval) {
                return Err(format!(
                    "field \"icmp.packet_interval\": {text} is not between {} and {}",
                    format_go_duration(MIN_PACKET_INTERVAL),
                    format_go_duration(MAX_PACKET_INTERVAL)
                ));
            }
            burst.packet_interval = interval;
        }
        if let Some(count) = min_received {
            burst.min_received = u32::try_from(count)
                .ok()
                .filter(|n| (1..=burst.packets).contains(n))
                .ok_or_else(|| {
                    format!(
                        "field \"icmp.min_received\": {count} is not between 1 and packets ({})",
                        burst.packets
                    )
                })?;
        }
        if !module_timeout.is_zero() && !burst.fits(module_timeout) {
            return Err(format!(
                "field \"icmp.packets\": {} packets {} apart take {}, which does not fit the module \
                 timeout {} (fewer packets, a shorter packet_interval, or a longer timeout)",
                burst.packets,
                format_go_duration(burst.packet_interval),
                format_go_duration(burst.span()),
                format_go_duration(module_timeout)
            ));
        }
        Ok(burst)
    }
}

/// `/config` shows the keys only for multi-packet modules, so a blackbox config dumps as before.
impl Serialize for Burst {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_struct("Burst", 3)?;
        if self.is_multi() {
            fields.serialize_field("packets", &self.packets)?;
            fields.serialize_field("packet_interval", &format_go_duration(self.packet_interval))?;
            fields.serialize_field("min_received", &self.min_received)?;
        }
        fields.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_one_packet() {
        let burst = Burst::validate(None, None, None, Duration::ZERO).expect("valid");
        assert_eq!(burst, Burst::default());
        assert!(!burst.is_multi());
        assert!(burst.fits(Duration::from_millis(1)));
    }

    #[test]
    fn errors_name_the_field() {
        let second = Duration::from_secs(1);
        type Case<'a> = (Option<i64>, Option<&'a str>, Option<i64>, Duration, &'a str);
        let cases: [Case<'_>; 7] = [
            (Some(0), None, None, Duration::ZERO, "icmp.packets"),
            (Some(101), None, None, Duration::ZERO, "icmp.packets"),
            (
                Some(5),
                Some("0s"),
                None,
                Duration::ZERO,
                "icmp.packet_interval",
            ),
            (
                Some(5),
                Some("soon"),
                None,
                Duration::ZERO,
                "icmp.packet_interval",
            ),
            (Some(5), None, Some(6), Duration::ZERO, "icmp.min_received"),
            (Some(5), None, Some(0), Duration::ZERO, "icmp.min_received"),
            (Some(11), Some("100ms"), None, second, "icmp.packets"),
        ];
        for (packets, interval, min, timeout, field) in cases {
            let error = Burst::validate(packets, interval, min, timeout).expect_err(field);
            assert!(error.contains(field), "{error}");
        }
        let fits = Burst::validate(Some(10), Some("100ms"), Some(3), second).expect("fits");
        assert_eq!(fits.span(), Duration::from_millis(900));
    }
}
