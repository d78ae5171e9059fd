//! Identities of channels and stations, and the component order of 3-component windows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A SEED channel: `NET.STA.LOC.CHA`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelId {
    pub network: String,
    pub station: String,
    pub location: String,
    pub channel: String,
}

impl ChannelId {
    pub fn new(network: &str, station: &str, location: &str, channel: &str) -> Self {
        Self {
            network: network.to_string(),
            station: station.to_string(),
            location: location.to_string(),
            channel: channel.to_string(),
        }
    }

    /// The station and band/instrument code this channel belongs to, with its component,
    /// or `None` when the channel code is not a 3-letter SEED code.
    pub fn split_component(&self) -> Option<(StationKey, char)> {
        let code: Vec<char> = self.channel.chars().collect();
        if code.len() != 3 {
            return None;
        }
        let key = StationKey {
            network: self.network.clone(),
            station: self.station.clone(),
            location: self.location.clone(),
            band: code[..2].iter().collect(),
        };
        Some((key, code[2]))
    }
}

impl FromStr for ChannelId {
    type Err = String;

    /// Parses `NET.STA.LOC.CHA` (the location may be empty), the key of `waveforms.raw`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('.').collect();
        match parts.as_slice() {
            [net, sta, loc, cha] if !net.is_empty() && !sta.is_empty() && !cha.is_empty() => {
                Ok(Self::new(net, sta, loc, cha))
            }
            _ => Err(format!("{s:?} is not NET.STA.LOC.CHA")),
        }
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.network, self.station, self.location, self.channel
        )
    }
}

/// A 3-component sensor: NET.STA.LOC plus the band and instrument codes (e.g. `EH`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StationKey {
    pub network: String,
    pub station: String,
    pub location: String,
    pub band: String,
}

impl fmt::Display for StationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.network, self.station, self.location, self.band
        )
    }
}

/// The spatial component a channel records. `1`/`2` orientation codes are treated as the
/// horizontal pair N/E (the usual convention for unoriented horizontals).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Component {
    North,
    East,
    Vertical,
}

impl Component {
    /// Maps a SEED orientation code; `None` for codes that are not part of a Z/N/E or Z/1/2 set.
    pub fn from_code(code: char) -> Option<Self> {
        match code.to_ascii_uppercase() {
            'N' | '1' => Some(Self::North),
            'E' | '2' => Some(Self::East),
            'Z' => Some(Self::Vertical),
            _ => None,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Self::North => 'N',
            Self::East => 'E',
            Self::Vertical => 'Z',
        }
    }
}

/// The order of the three channels in every window, spectrogram and feature vector.
/// The default `[N, E, Z]` is the order the reference study used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelOrder(pub [Component; 3]);

impl Default for ChannelOrder {
    fn default() -> Self {
        Self([Component::North, Component::East, Component::Vertical])
    }
}

impl ChannelOrder {
    /// Position of a component in this order.
    pub fn index_of(&self, c: Component) -> usize {
        self.0.iter().position(|&x| x == c).unwrap_or(0)
    }
}

impl fmt::Display for ChannelOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0 {
            write!(f, "{}", c.letter())?;
        }
        Ok(())
    }
}

impl FromStr for ChannelOrder {
    type Err = String;

    /// Parses three distinct letters out of `N`, `E`, `Z` (e.g. `NEZ`, `ZNE`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let comps: Vec<Component> = s
            .chars()
            .map(|c| match c.to_ascii_uppercase() {
                'N' => Ok(Component::North),
                'E' => Ok(Component::East),
                'Z' => Ok(Component::Vertical),
                other => Err(format!(
                    "channel order '{s}': '{other}' is not one of N, E, Z"
                )),
            })
            .collect::<Result<_, _>>()?;
        match comps.as_slice() {
            [a, b, c] if a != b && b != c && a != c => Ok(Self([*a, *b, *c])),
            _ => Err(format!(
                "channel order '{s}' must name N, E and Z once each"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_channel_codes() {
        let id = ChannelId::new("BW", "RJOB", "", "EHZ");
        let (key, comp) = id.split_component().unwrap();
        assert_eq!(key.to_string(), "BW.RJOB..EH");
        assert_eq!(Component::from_code(comp), Some(Component::Vertical));
        assert_eq!(Component::from_code('1'), Some(Component::North));
        assert_eq!(Component::from_code('H'), None);
        assert!(ChannelId::new("X", "Y", "", "LOG")
            .split_component()
            .is_some());
        assert!(ChannelId::new("X", "Y", "", "LONG")
            .split_component()
            .is_none());
    }

    #[test]
    fn parses_channel_order() {
        assert_eq!(
            "nez".parse::<ChannelOrder>().unwrap(),
            ChannelOrder::default()
        );
        let zne: ChannelOrder = "ZNE".parse().unwrap();
        assert_eq!(zne.index_of(Component::Vertical), 0);
        assert_eq!(zne.to_string(), "ZNE");
        assert!("NNZ".parse::<ChannelOrder>().is_err());
        assert!("NEX".parse::<ChannelOrder>().is_err());
    }
}
