//! A JSON tensor's `data` (flat or nested row-major) read straight into typed elements, with no `Value` tree in between, and never more elements than its shape holds: the memory a JSON body costs is its typed elements.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::TensorData;
use super::element::Element;

/// The `count` elements of `data`, each what `T` reads from a JSON scalar.
pub(super) fn read<T: Element>(data: &RawValue, count: usize) -> Result<TensorData, String> {
    let mut items: Vec<T> = Vec::with_capacity(count.min(1 << 20));
    let mut reader = serde_json::Deserializer::from_str(data.get());
    Flat {
        items: &mut items,
        count,
    }
    .deserialize(&mut reader)
    .map_err(|e| {
        // The visitor's own messages, without serde's position suffix.
        let said = e.to_string();
        said.split(" at line ").next().unwrap_or(&said).to_owned()
    })?;
    if items.len() != count {
        return Err(format!(
            "the shape holds {count} elements, `data` has {}",
            items.len()
        ));
    }
    Ok(T::wrap(items))
}

/// Pushes every scalar of a (possibly nested) JSON array onto `items`.
struct Flat<'v, T> {
    items: &'v mut Vec<T>,
    count: usize,
}

impl<T: Element> Flat<'_, T> {
    fn push<E: de::Error>(self, value: &Value) -> Result<(), E> {
        if self.items.len() >= self.count {
            return Err(E::custom(format!(
                "the shape holds {} elements, `data` has more",
                self.count
            )));
        }
        let item = T::one(value)
            .ok_or_else(|| E::custom(format!("`data` holds a value that is not {}", T::WHAT)))?;
        self.items.push(item);
        Ok(())
    }
}

impl<'de, T: Element> DeserializeSeed<'de> for Flat<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flat<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of {}", T::WHAT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let count = self.count;
        while seq
            .next_element_seed(Flat {
                items: &mut *self.items,
                count,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(&Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(&Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(&Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(&Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(&Value::String(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(&Value::Null)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(de::Error::custom(format!(
            "`data` holds a value that is not {}",
            T::WHAT
        )))
    }
}
