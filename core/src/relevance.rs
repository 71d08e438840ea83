//! The relevance floor: the lowest cosine similarity a vector channel's hit may have and still
//! count as a match. Below it a hit is noise (every product is *some* distance from any query), so
//! it is dropped before fusion, facets and totals.
//!
//! A similarity's scale depends on which two modalities it compares: a photo against product
//! photos scores far higher than a text against the same photos. So the floor is keyed by the
//! query vector's modality (`text`: the query vector came from the text tower; `photo`: from the
//! vision tower), then by channel (`image`: against the products' image vectors; `text`: against
//! their text embeddings). A photo query's text channel is therefore `photo.text`, and a query with
//! both a photo and text uses `photo.image` and `text.text`.
//!
//! Defaults come from the model card (`vitrine-model.json`'s `relevance_floor`), then from the
//! settings `vitrine tune` saved in the index, and a request's own `fusion.floor` wins over both.

use serde::{Deserialize, Serialize};

/// Floors of the two vector channels for one query modality. `None`: no floor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelFloors {
    /// Against the products' image vectors.
    pub image: Option<f32>,
    /// Against the products' text embeddings.
    pub text: Option<f32>,
}

/// Floors by the modality of the query vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Floors {
    /// Query vectors from the text tower.
    pub text: ChannelFloors,
    /// Query vectors from the vision tower.
    pub photo: ChannelFloors,
}

/// Which tower made a query vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    Text,
    Photo,
}

/// A vector channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorChannel {
    Image,
    Text,
}

/// A floor outside [-1, 1] or not a number; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be a number between -1 and 1 (a cosine similarity)")]
pub struct InvalidFloor {
    pub field: &'static str,
}

impl Floors {
    pub fn get(&self, query: Modality, channel: VectorChannel) -> Option<f32> {
        let c = match query {
            Modality::Text => &self.text,
            Modality::Photo => &self.photo,
        };
        match channel {
            VectorChannel::Image => c.image,
            VectorChannel::Text => c.text,
        }
    }

    pub fn set(&mut self, query: Modality, channel: VectorChannel, v: Option<f32>) {
        let c = match query {
            Modality::Text => &mut self.text,
            Modality::Photo => &mut self.photo,
        };
        match channel {
            VectorChannel::Image => c.image = v,
            VectorChannel::Text => c.text = v,
        }
    }

    /// No channel has a floor.
    pub fn is_none(&self) -> bool {
        *self == Floors::default()
    }

    pub fn validate(&self) -> Result<(), InvalidFloor> {
        let fields = [
            ("fusion.floor.text.image", self.text.image),
            ("fusion.floor.text.text", self.text.text),
            ("fusion.floor.photo.image", self.photo.image),
            ("fusion.floor.photo.text", self.photo.text),
        ];
        for (field, v) in fields {
            if let Some(v) = v {
                if !(-1.0..=1.0).contains(&v) {
                    return Err(InvalidFloor { field });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_keyed_by_query_modality_then_channel() {
        let f: Floors = serde_json::from_str(r#"{"text": {"image": 0.2}, "photo": {"image": 0.6, "text": 0.1}}"#).unwrap();
        assert_eq!(f.get(Modality::Text, VectorChannel::Image), Some(0.2));
        assert_eq!(f.get(Modality::Text, VectorChannel::Text), None);
        assert_eq!(f.get(Modality::Photo, VectorChannel::Image), Some(0.6));
        assert_eq!(f.get(Modality::Photo, VectorChannel::Text), Some(0.1));
        let mut g = f;
        g.set(Modality::Text, VectorChannel::Text, Some(0.5));
        assert_eq!(g.text.text, Some(0.5));
        assert!(Floors::default().is_none() && !f.is_none());
    }

    #[test]
    fn hostile_floors_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, -1.5, 2.0] {
            let f = Floors { photo: ChannelFloors { text: Some(bad), image: None }, ..Floors::default() };
            assert_eq!(f.validate().unwrap_err().field, "fusion.floor.photo.text", "{bad}");
        }
        assert!(serde_json::from_str::<Floors>(r#"{"txt": {}}"#).is_err(), "unknown fields are refused");
        assert!(Floors::default().validate().is_ok());
    }
}
