//! Reads the tensors of a state_dict written by `torch.save` (PyTorch ≥ 1.6 zip format), so a
//! user's `.pt`/`.pth` file imports as it is, without Python.
//!
//! The archive holds `<name>/data.pkl`, a pickle (protocol 2 by default) whose tensors are
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` calls with each storage a
//! persistent id `('storage', torch.FloatStorage, key, location, numel)`, and `<name>/data/<key>`,
//! each storage's raw little-endian bytes. Only what a state_dict needs is understood: dicts,
//! tuples, lists, scalars, strings, tensors; any other object is kept opaque, and unpickling never
//! runs code. Mutations after memoisation (a dict filled after `BINPUT`) are not seen through the
//! memo, which a state_dict never relies on.

use std::collections::HashMap;
use std::io::Read;

use tch::{Kind, Tensor};

/// A pickled value, as far as a state_dict needs.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage {
        kind: Kind,
        key: String,
    },
    Tensor(TensorRef),
    Mark,
    /// Any other object (an optimizer's state, a hook dict): not a tensor, never inspected.
    Opaque(String),
}

#[derive(Clone, Debug)]
struct TensorRef {
    kind: Kind,
    key: String,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// The named tensors of the state_dict whose file holds `bytes`; `Err` says what is wrong.
pub fn read_state_dict(bytes: &[u8]) -> Result<HashMap<String, Tensor>, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a torch.save zip: {e}"))?;
    let pkl = (0..zip.len())
        .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_string()))
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .ok_or("no data.pkl: not written by torch.save (PyTorch ≥ 1.6)")?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        let _ = f.read_to_string(&mut order);
        if order.trim() != "little" {
            return Err(format!(
                "byte order {order:?}; only little-endian files are read"
            ));
        }
    }
    let pickle = read_entry(&mut zip, &pkl)?;
    let root = unpickle(&pickle)?;
    let Value::Dict(items) = root else {
        return Err(format!(
            "holds {}, not a state_dict: save `model.state_dict()` instead of the model",
            describe(&root)
        ));
    };
    let mut out = HashMap::new();
    for (k, v) in items {
        let (Value::Str(name), Value::Tensor(t)) = (&k, &v) else {
            return Err(format!(
                "entry {} is {}, not a tensor: a checkpoint? save its state_dict alone",
                describe(&k),
                describe(&v)
            ));
        };
        let data = read_entry(&mut zip, &format!("{prefix}data/{}", t.key))?;
        out.insert(name.clone(), materialise(name, t, &data)?);
    }
    Ok(out)
}

fn read_entry(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
) -> Result<Vec<u8>, String> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| format!("archive entry {name}: {e}"))?;
    let mut bytes = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut bytes)
        .map_err(|e| format!("reading {name}: {e}"))?;
    Ok(bytes)
}

/// The tensor `t` views in its storage's bytes, as a contiguous tensor of its own.
fn materialise(name: &str, t: &TensorRef, data: &[u8]) -> Result<Tensor, String> {
    let width = t.kind.elt_size_in_bytes();
    if !data.len().is_multiple_of(width) {
        return Err(format!(
            "{name}: storage of {} bytes for {:?}",
            data.len(),
            t.kind
        ));
    }
    let numel = (data.len() / width) as i64;
    let bad = || {
        format!(
            "{name}: view (offset {}, size {:?}, stride {:?}) outside its storage of {numel}",
            t.offset, t.size, t.stride
        )
    };
    if t.size.len() != t.stride.len()
        || t.offset < 0
        || t.size.iter().chain(&t.stride).any(|&v| v < 0)
    {
        return Err(bad());
    }
    // The furthest element the view reaches must lie inside the storage.
    let reach = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&n, &s)| {
            acc.checked_add((n - 1).max(0).checked_mul(s)?)
        });
    let empty = t.size.contains(&0);
    if !empty && reach.is_none_or(|r| r >= numel) {
        return Err(bad());
    }
    let torch_err = |e: tch::TchError| format!("{name}: {e}");
    let flat = Tensor::f_from_data_size(data, &[numel], t.kind).map_err(torch_err)?;
    flat.f_as_strided(&t.size, &t.stride, t.offset)
        .and_then(|v| v.f_contiguous())
        .map_err(torch_err)
}

fn describe(v: &Value) -> String {
    match v {
        Value::Opaque(what) => format!("a pickled {what}"),
        Value::Str(s) => format!("{s:?}"),
        Value::Dict(_) => "a dict".into(),
        Value::Tensor(_) => "a tensor".into(),
        Value::Bool(b) => format!("the bool {b}"),
        Value::Float(x) => format!("the number {x}"),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

/// Values a pickle may copy out of its memo in all: a state_dict's are a few per tensor.
const COPY_BUDGET: usize = 10_000_000;

/// How many values `v` holds, itself included.
fn nodes(v: &Value) -> usize {
    1 + match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(nodes).sum(),
        Value::Dict(items) => items.iter().map(|(k, v)| nodes(k) + nodes(v)).sum(),
        _ => 0,
    }
}

/// A little pickle machine: the opcodes of protocols 2–4 that data containers use.
fn unpickle(b: &[u8]) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut copied = 0usize;
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = b
            .get(*i..*i + n)
            .ok_or_else(|| format!("pickle truncated at byte {}", *i))?;
        *i += n;
        Ok(s)
    };
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or("pickle stack underflow".to_string());
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, String> {
        let at = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("pickle MARK missing")?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    };
    let line = |i: &mut usize| -> Result<String, String> {
        let end = b[*i..]
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("pickle GLOBAL without newline")?;
        let s = String::from_utf8_lossy(&b[*i..*i + end]).into_owned();
        *i += end + 1;
        Ok(s)
    };
    let u32_at = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    loop {
        let at = i;
        let op = *take(&mut i, 1)?.first().unwrap_or(&0);
        match op {
            0x80 => {
                take(&mut i, 1)?;
            }
            0x95 => {
                take(&mut i, 8)?;
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => {
                let s = take(&mut i, 4)?;
                stack.push(Value::Int(
                    i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64
                ));
            }
            b'K' => stack.push(Value::Int(take(&mut i, 1)?[0] as i64)),
            b'M' => {
                let s = take(&mut i, 2)?;
                stack.push(Value::Int(u16::from_le_bytes([s[0], s[1]]) as i64));
            }
            0x8a => {
                let n = take(&mut i, 1)?[0] as usize;
                let s = take(&mut i, n)?;
                if n > 8 {
                    return Err(format!("pickle LONG1 of {n} bytes at {at}"));
                }
                let mut v: i64 = 0;
                for (k, &byte) in s.iter().enumerate() {
                    v |= (byte as i64) << (8 * k);
                }
                if n > 0 && n < 8 && s[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                let s = take(&mut i, 8)?;
                stack.push(Value::Float(f64::from_be_bytes(
                    s.try_into().unwrap_or([0; 8]),
                )));
            }
            b'X' | 0x8c => {
                let n = if op == b'X' {
                    u32_at(take(&mut i, 4)?) as usize
                } else {
                    take(&mut i, 1)?[0] as usize
                };
                let s = take(&mut i, n)?;
                stack.push(Value::Str(String::from_utf8_lossy(s).into_owned()));
            }
            b'c' => {
                let module = line(&mut i)?;
                let name = line(&mut i)?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => return Err(format!("pickle STACK_GLOBAL without names at {at}")),
                }
            }
            b')' => stack.push(Value::Tuple(vec![])),
            b']' => stack.push(Value::List(vec![])),
            b'}' => stack.push(Value::Dict(vec![])),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::List(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("pickle stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'q' => {
                let k = take(&mut i, 1)?[0] as u32;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or("pickle BINPUT on empty stack")?,
                );
            }
            b'r' => {
                let k = u32_at(take(&mut i, 4)?);
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or("pickle LONG_BINPUT on empty stack")?,
                );
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or("pickle MEMOIZE on empty stack")?,
                );
            }
            b'h' | b'j' => {
                let k = if op == b'h' {
                    take(&mut i, 1)?[0] as u32
                } else {
                    u32_at(take(&mut i, 4)?)
                };
                let v = memo.get(&k).ok_or(format!("pickle memo {k} unset"))?;
                // Each fetch copies; a pickle that fetches a list into itself would double it
                // per fetch (a "billion laughs"), so the copies have a budget.
                copied += nodes(v);
                if copied > COPY_BUDGET {
                    return Err(format!(
                        "pickle copies more than {COPY_BUDGET} values from its memo (byte {at})"
                    ));
                }
                stack.push(v.clone());
            }
            b'a' => {
                let v = pop(&mut stack)?;
                if let Some(Value::List(l)) = stack.last_mut() {
                    l.push(v);
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Value::List(l)) = stack.last_mut() {
                    l.extend(items);
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                if let Some(Value::Dict(d)) = stack.last_mut() {
                    d.push((k, v));
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Value::Dict(d)) = stack.last_mut() {
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
            }
            // BUILD sets an object's state (an OrderedDict's `_metadata`): not needed.
            b'b' => {
                pop(&mut stack)?;
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(persistent_storage(pid).map_err(|e| format!("{e} at byte {at}"))?);
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let func = pop(&mut stack)?;
                stack.push(reduce(func, args).map_err(|e| format!("{e} at byte {at}"))?);
            }
            b'\x81' => {
                let _args = pop(&mut stack)?;
                let class = pop(&mut stack)?;
                stack.push(Value::Opaque(format!("{class:?}")));
            }
            other => {
                return Err(format!(
                    "pickle opcode 0x{other:02x} at byte {at} is not read"
                ))
            }
        }
    }
}

/// `('storage', torch.FloatStorage, key, location, numel)` → the storage it names.
fn persistent_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(t) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match t.as_slice() {
        [Value::Str(tag), Value::Global(_, class), Value::Str(key), ..] if tag == "storage" => {
            let kind = storage_kind(class).ok_or(format!("storage type {class} is not read"))?;
            Ok(Value::Storage {
                kind,
                key: key.clone(),
            })
        }
        other => Err(format!("persistent id {other:?} is not a storage")),
    }
}

fn ints(v: &Value, what: &str) -> Result<Vec<i64>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(n) => Ok(*n),
                _ => Err(format!("tensor {what} holds {x:?}")),
            })
            .collect(),
        other => Err(format!("tensor {what} is {other:?}")),
    }
}

/// A call `func(*args)`: tensors and dicts are built, anything else stays opaque.
fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = &func else {
        return Ok(Value::Opaque(format!("{func:?}")));
    };
    let args = match args {
        Value::Tuple(a) => a,
        other => return Err(format!("{module}.{name} called with {other:?}")),
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => match args.as_slice() {
            [Value::Storage { kind, key }, Value::Int(offset), size, stride, ..] => {
                Ok(Value::Tensor(TensorRef {
                    kind: *kind,
                    key: key.clone(),
                    offset: *offset,
                    size: ints(size, "size")?,
                    stride: ints(stride, "stride")?,
                }))
            }
            other => Err(format!("_rebuild_tensor_v2 with {other:?}")),
        },
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            match args.into_iter().next() {
                Some(t @ Value::Tensor(_)) => Ok(t),
                other => Err(format!("_rebuild_parameter of {other:?}")),
            }
        }
        ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
            Ok(Value::Dict(vec![]))
        }
        _ => Ok(Value::Opaque(format!("{module}.{name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// {'a': (1, -2, 300), 'b': 'a'} in protocol 2, 'a' fetched back from the memo.
    fn small_pickle() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend([b'X', 1, 0, 0, 0, b'a', b'q', 1]);
        p.extend([b'K', 1, 0x8a, 1, 0xfe, b'M', 0x2c, 0x01, 0x87]);
        p.extend([b'X', 1, 0, 0, 0, b'b', b'h', 1, b'u', b'.']);
        p
    }

    #[test]
    fn every_truncation_and_byte_change_of_a_pickle_returns_instead_of_panicking() {
        let p = small_pickle();
        let mut errors = 0;
        for n in 0..p.len() {
            errors += unpickle(&p[..n]).is_err() as usize;
        }
        assert_eq!(errors, p.len(), "a truncated pickle has no STOP");
        for at in 0..p.len() {
            for byte in 0..=255u8 {
                let mut q = p.clone();
                q[at] = byte;
                let _ = unpickle(&q);
            }
        }
    }

    #[test]
    fn hand_written_pickle_of_a_dict_with_ints_strings_and_memo() {
        let p = small_pickle();
        let Value::Dict(d) = unpickle(&p).unwrap() else {
            panic!("not a dict")
        };
        assert_eq!(d.len(), 2);
        assert!(matches!(&d[1].1, Value::Str(s) if s == "a"));
        assert_eq!(ints(&d[0].1, "t").unwrap(), vec![1, -2, 300]);
    }

    #[test]
    fn views_outside_their_storage_are_errors_not_panics() {
        let data: Vec<u8> = (0..6u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let view = |offset, size: Vec<i64>, stride: Vec<i64>| TensorRef {
            kind: Kind::Float,
            key: "0".into(),
            offset,
            size,
            stride,
        };
        let t = materialise("w", &view(1, vec![2, 2], vec![1, 2]), &data).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(),
            [1., 3., 2., 4.]
        );
        for bad in [
            view(0, vec![7], vec![1]),
            view(3, vec![2, 2], vec![2, 1]),
            view(0, vec![2], vec![-1]),
            view(-1, vec![1], vec![1]),
            view(0, vec![2, 2], vec![1]),
            view(0, vec![2, i64::MAX], vec![i64::MAX, 2]),
        ] {
            let err = materialise("w", &bad, &data).unwrap_err();
            assert!(err.contains("outside its storage"), "{err}");
        }
        assert!(materialise("w", &view(0, vec![1], vec![1]), &data[..5]).is_err());
    }

    #[test]
    fn truncated_and_unknown_pickles_are_errors_not_panics() {
        assert!(unpickle(&[0x80, 2, b'X', 9, 0])
            .unwrap_err()
            .contains("truncated"));
        assert!(unpickle(&[0x80, 2, 0xff]).unwrap_err().contains("0xff"));
        assert!(unpickle(b"u").unwrap_err().contains("MARK"));
        assert!(unpickle(&[]).is_err());
        // A list extended by two copies of itself, again and again (each `( h0 h0 e q0` triples
        // it): refused once the copies pass the budget, not expanded to 3^40 values.
        let mut bomb = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..40 {
            bomb.extend([b'(', b'h', 0, b'h', 0, b'e', b'q', 0]);
        }
        bomb.push(b'.');
        assert!(unpickle(&bomb).unwrap_err().contains("copies more than"));
    }
}
