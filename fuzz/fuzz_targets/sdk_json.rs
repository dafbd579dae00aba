//! Fuzz target: the SDK's own JSON (`sparkwing::json`, kept dependency-free for cold builds)
//! against `serde_json`.
//!
//! Properties: nothing panics; both accept the same documents (beyond the SDK's nesting limit,
//! which only the SDK has) and read them as the same value (numbers compared as numbers,
//! duplicate keys: the last one wins, as `Value::get` does); what the SDK prints, both read back
//! as the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use sparkwing::json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = Value::parse(text);
    let theirs = serde_parse(text);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert!(same(a, b), "{text:?}: sdk {a:?}, serde_json {b:?}"),
        (Err(e), Ok(_)) if e.to_string().contains("nesting too deep") => return,
        (Err(e), Ok(b)) => panic!("{text:?}: sdk refuses ({e}), serde_json reads {b:?}"),
        (Ok(a), Err(e)) => panic!("{text:?}: sdk reads {a:?}, serde_json refuses ({e})"),
        (Err(_), Err(_)) => return,
    }
    let Ok(value) = ours else { return };
    let printed = value.to_string();
    let again = Value::parse(&printed)
        .unwrap_or_else(|e| panic!("sdk cannot read its own {printed:?}: {e}"));
    let serde_again = serde_parse(&printed)
        .unwrap_or_else(|e| panic!("serde_json cannot read the sdk's {printed:?}: {e}"));
    assert!(same(&again, &serde_again), "{printed:?}");
    assert!(
        same(&value, &serde_again),
        "{text:?} printed as {printed:?}"
    );
});

fn serde_parse(text: &str) -> serde_json::Result<serde_json::Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    // The SDK has a nesting limit of its own; serde_json's (128) must not decide.
    de.disable_recursion_limit();
    let v = serde_json::Value::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

fn same(a: &Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (Value::Null, serde_json::Value::Null) => true,
        (Value::Bool(x), serde_json::Value::Bool(y)) => x == y,
        (Value::Int(x), serde_json::Value::Number(n)) => match n.as_i64() {
            Some(y) => *x == y,
            None => n.as_f64() == Some(*x as f64),
        },
        (Value::Float(x), serde_json::Value::Number(n)) => n.as_f64() == Some(*x),
        (Value::String(x), serde_json::Value::String(y)) => x == y,
        (Value::Array(xs), serde_json::Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        (Value::Object(fields), serde_json::Value::Object(map)) => {
            // Duplicate keys: the last one counts, on both sides.
            let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.len() == map.len()
                && keys.iter().all(|k| {
                    map.get(*k)
                        .is_some_and(|y| a.get(k).is_some_and(|x| same(x, y)))
                })
        }
        _ => false,
    }
}
