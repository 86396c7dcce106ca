//! Where a config error is reported, and the checks every key goes
//! through (range, choice, text, required, rejected).
use super::*;

/// Where an error is reported: the file and the field prefix (`port[1] "vm2"`).
pub(super) struct Ctx<'a> {
    pub(super) origin: &'a str,
    pub(super) prefix: String,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(origin: &'a str, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Ctx { origin, prefix }
    }

    /// The prefix shows the name as soon as it is a string, valid or not.
    pub(super) fn port(origin: &'a str, label: &str, map: &Map<String, Value>) -> Self {
        match map.get("name").and_then(Value::as_str) {
            Some(name) => Ctx::new(origin, format!("{label} {name:?}")),
            None => Ctx::new(origin, label),
        }
    }

    pub(super) fn err(&self, key: &str, message: impl Display) -> ConfigError {
        let field = match (self.prefix.as_str(), key) {
            (p, "") | ("", p) => p.to_string(),
            (p, k) => format!("{p}.{k}"),
        };
        let (origin, message) = (self.origin.to_string(), message.to_string());
        ConfigError {
            origin,
            field,
            message,
        }
    }

    /// serde does not say which key failed, so on error each key is decoded
    /// alone (every raw field is optional) to find the culprit.
    pub(super) fn decode<T: DeserializeOwned>(&self, map: &Map<String, Value>) -> Res<T> {
        serde_json::from_value(Value::Object(map.clone())).map_err(|e| {
            let culprit = map.iter().find(|(k, v)| {
                let one = Map::from_iter([((*k).clone(), (*v).clone())]);
                serde_json::from_value::<T>(Value::Object(one)).is_err()
            });
            let msg = e.to_string().replace("expected i64", "expected an integer");
            self.err(culprit.map_or("", |(k, _)| k), msg)
        })
    }

    pub(super) fn int<T: TryFrom<i64>>(&self, key: &str, v: i64, r: Range) -> Res<T> {
        match T::try_from(v) {
            Ok(t) if r.contains(&v) => Ok(t),
            _ => Err(self.err(key, format!("{v} is out of range {r:?}"))),
        }
    }

    pub(super) fn opt<T: TryFrom<i64>>(&self, key: &str, v: Option<i64>, or: T, r: Range) -> Res<T> {
        v.map_or(Ok(or), |v| self.int(key, v, r))
    }

    pub(super) fn ints<T: TryFrom<i64>>(&self, key: &str, v: Vec<i64>, r: Range) -> Res<Vec<T>> {
        v.into_iter().map(|x| self.int(key, x, r.clone())).collect()
    }

    pub(super) fn unique<T: PartialEq + Display>(&self, key: &str, v: &[T]) -> Res<()> {
        match v.iter().enumerate().find(|(i, x)| v[..*i].contains(x)) {
            Some((_, x)) => Err(self.err(key, format!("{x} is listed twice"))),
            None => Ok(()),
        }
    }

    pub(super) fn choice<T: Copy>(&self, key: &str, v: Option<String>, opts: &[(&str, T)]) -> Res<Option<T>> {
        let Some(v) = v else { return Ok(None) };
        match opts.iter().find(|(s, _)| *s == v) {
            Some((_, t)) => Ok(Some(*t)),
            None => {
                let names: Vec<String> = opts.iter().map(|(s, _)| format!("{s:?}")).collect();
                Err(self.err(key, format!("{v:?} is not one of {}", names.join(", "))))
            }
        }
    }

    pub(super) fn text(&self, key: &str, v: Option<String>) -> Res<Option<String>> {
        match v {
            Some(s) if s.is_empty() => Err(self.err(key, "must not be empty")),
            v => Ok(v),
        }
    }

    pub(super) fn required(&self, key: &str, v: Option<String>) -> Res<String> {
        let missing = || self.err(key, "missing required field");
        self.text(key, v)?.ok_or_else(missing)
    }

    /// Rejects the first of `keys` that is set although `why` rules it out.
    pub(super) fn reject(&self, why: &str, keys: &[(&str, bool)]) -> Res<()> {
        match keys.iter().find(|(_, set)| *set) {
            Some((k, _)) => Err(self.err(k, format!("not allowed {why}"))),
            None => Ok(()),
        }
    }
}
