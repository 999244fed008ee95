//! Reads `pytorch_model.bin`: the zip archive `torch.save` writes (a pickle
//! describing the tensors in `*/data.pkl`, raw storages in `*/data/<key>`).
//!
//! libtorch's own reader (`tch::Tensor::loadz_multi`) rejects files saved from an
//! `OrderedDict` state dict with hooks, which is how sentence-transformers saves
//! `Dense` modules, so this module interprets the small subset of pickle that
//! `torch.save` emits for a state dict and nothing else: containers, strings,
//! numbers, `collections.OrderedDict`, and tensors rebuilt by
//! `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` from persistent storage
//! ids. No arbitrary Python is run, whatever the file says.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use tch::{Kind, Tensor};

/// Every named tensor in a `torch.save` zip archive (nested dicts are flattened
/// with `.`-joined keys).
pub fn read_torch_zip(path: &Path) -> Result<Vec<(String, Tensor)>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| format!("not a zip archive ({e}); legacy pre-1.6 pickles are not supported"))?;
    let pkl_name = archive
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .ok_or("no data.pkl in the archive")?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_owned();
    let mut pickle = Vec::new();
    archive.by_name(&pkl_name).map_err(|e| e.to_string())?.read_to_end(&mut pickle).map_err(|e| e.to_string())?;
    let mut storages = |key: &str| -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        archive
            .by_name(&format!("{prefix}data/{key}"))
            .map_err(|e| format!("storage {key}: {e}"))?
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    };
    let root = Machine::default().run(&pickle, &mut storages)?;
    let mut out = Vec::new();
    flatten(String::new(), root, &mut out)?;
    Ok(out)
}

#[derive(Clone)]
enum Value {
    /// None, booleans, floats and bytes: present in state dicts' metadata, never needed.
    None,
    Int(i64),
    Str(String),
    Tuple(Rc<Vec<Value>>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String),
    Storage {
        kind: Kind,
        key: String,
    },
    Tensor(Rc<Tensor>),
    Mark,
}

fn flatten(prefix: String, value: Value, out: &mut Vec<(String, Tensor)>) -> Result<(), String> {
    match value {
        Value::Dict(items) => {
            for (k, v) in items {
                let Value::Str(k) = k else { continue };
                let name = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                flatten(name, v, out)?;
            }
            Ok(())
        }
        Value::Tensor(t) => {
            out.push((prefix, t.shallow_clone()));
            Ok(())
        }
        _ => Ok(()), // metadata such as version numbers
    }
}

#[derive(Default)]
struct Machine {
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl Machine {
    fn pop(&mut self) -> Result<Value, String> {
        self.stack.pop().ok_or_else(|| "pickle stack underflow".to_owned())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or("pickle MARK missing")?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn run(mut self, data: &[u8], storage: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>) -> Result<Value, String> {
        let mut r = Reader { data, pos: 0 };
        loop {
            let op = r.u8()?;
            match op {
                0x80 => {
                    r.u8()?; // PROTO
                }
                0x95 => {
                    r.take(8)?; // FRAME
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.stack.push(Value::Mark),
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 | 0x89 => self.stack.push(Value::None), // NEWTRUE, NEWFALSE
                b'K' => {
                    let v = r.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(r.take(2)?.try_into().unwrap());
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'J' => {
                    let v = i32::from_le_bytes(r.take(4)?.try_into().unwrap());
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = r.u8()? as usize; // LONG1
                    let bytes = r.take(n)?;
                    let mut v: i64 = 0;
                    for (i, b) in bytes.iter().enumerate().take(8) {
                        v |= i64::from(*b) << (8 * i);
                    }
                    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    r.take(8)?; // BINFLOAT
                    self.stack.push(Value::None);
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u32::from_le_bytes(r.take(4)?.try_into().unwrap()) as usize,
                        0x8c => r.u8()? as usize,
                        _ => u64::from_le_bytes(r.take(8)?.try_into().unwrap()) as usize,
                    };
                    let s = String::from_utf8(r.take(n)?.to_vec()).map_err(|e| e.to_string())?;
                    self.stack.push(Value::Str(s));
                }
                b'B' | b'C' => {
                    let n = if op == b'B' {
                        u32::from_le_bytes(r.take(4)?.try_into().unwrap()) as usize
                    } else {
                        r.u8()? as usize
                    };
                    r.take(n)?;
                    self.stack.push(Value::None);
                }
                b'c' => {
                    let module = r.line()?;
                    let name = r.line()?;
                    self.stack.push(Value::Global(format!("{module}.{name}")));
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(format!("{m}.{n}"))),
                        _ => return Err("STACK_GLOBAL without strings".into()),
                    }
                }
                b'q' => {
                    let i = r.u8()?;
                    self.memo.insert(u32::from(i), self.stack.last().cloned().ok_or("BINPUT on empty stack")?);
                }
                b'r' => {
                    let i = u32::from_le_bytes(r.take(4)?.try_into().unwrap());
                    self.memo.insert(i, self.stack.last().cloned().ok_or("LONG_BINPUT on empty stack")?);
                }
                0x94 => {
                    let i = self.memo.len() as u32; // MEMOIZE
                    self.memo.insert(i, self.stack.last().cloned().ok_or("MEMOIZE on empty stack")?);
                }
                b'h' => {
                    let i = r.u8()?;
                    self.stack.push(self.memo.get(&u32::from(i)).cloned().ok_or("BINGET of unknown memo")?);
                }
                b'j' => {
                    let i = u32::from_le_bytes(r.take(4)?.try_into().unwrap());
                    self.stack.push(self.memo.get(&i).cloned().ok_or("LONG_BINGET of unknown memo")?);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self.stack.len().checked_sub(n).ok_or("TUPLE underflow")?;
                    let items = self.stack.split_off(at);
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b'a' => {
                    let v = self.pop()?;
                    if let Some(Value::List(l)) = self.stack.last_mut() {
                        l.push(v);
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    if let Some(Value::List(l)) = self.stack.last_mut() {
                        l.extend(items);
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    if let Some(Value::Dict(d)) = self.stack.last_mut() {
                        d.push((k, v));
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if let Some(Value::Dict(d)) = self.stack.last_mut() {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                }
                b'b' => {
                    self.pop()?; // BUILD: object state (an OrderedDict's _metadata); not needed
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_storage(pid)?);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.stack.push(reduce(callable, args, storage)?);
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args); only OrderedDict is expected
                    let _args = self.pop()?;
                    let _cls = self.pop()?;
                    self.stack.push(Value::Dict(Vec::new()));
                }
                other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
            }
        }
    }
}

fn persistent_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else { return Err("persistent id is not a tuple".into()) };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(class), Value::Str(key), ..] if tag == "storage" => {
            let kind = match class.rsplit('.').next().unwrap_or_default() {
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
                other => return Err(format!("unsupported storage type {other}")),
            };
            Ok(Value::Storage { kind, key: key.clone() })
        }
        _ => Err("unexpected persistent id".into()),
    }
}

fn ints(v: &Value) -> Result<Vec<i64>, String> {
    match v {
        Value::Tuple(items) => items
            .iter()
            .map(|i| if let Value::Int(n) = i { Ok(*n) } else { Err("non-integer in shape".to_owned()) })
            .collect(),
        _ => Err("shape is not a tuple".into()),
    }
}

fn reduce(
    callable: Value,
    args: Value,
    storage: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
) -> Result<Value, String> {
    let Value::Global(name) = callable else { return Err("REDUCE on a non-global".into()) };
    let Value::Tuple(args) = args else { return Err("REDUCE arguments are not a tuple".into()) };
    match name.as_str() {
        "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let [Value::Storage { kind, key }, Value::Int(offset), size, stride, ..] = args.as_slice() else {
                return Err("unexpected _rebuild_tensor_v2 arguments".into());
            };
            let bytes = storage(key)?;
            let numel = (bytes.len() / kind.elt_size_in_bytes()) as i64;
            let flat = Tensor::f_from_data_size(&bytes, &[numel], *kind).map_err(|e| e.to_string())?;
            let tensor = flat
                .f_as_strided(ints(size)?, ints(stride)?, Some(*offset))
                .and_then(|t| t.f_contiguous())
                .map_err(|e| e.to_string())?;
            Ok(Value::Tensor(Rc::new(tensor)))
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => match args.first() {
            Some(Value::Tensor(t)) => Ok(Value::Tensor(t.clone())),
            _ => Err("unexpected _rebuild_parameter arguments".into()),
        },
        other => Err(format!("the checkpoint calls {other}, which a plain state dict never does")),
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len()).ok_or("truncated pickle")?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|b| *b == b'\n').ok_or("unterminated GLOBAL")?;
        self.pos += end + 1;
        String::from_utf8(rest[..end].to_vec()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pytorch_model.bin");
        std::fs::write(&path, b"definitely not a zip").unwrap();
        assert!(read_torch_zip(&path).unwrap_err().contains("zip"));
        let mut machine = Machine::default();
        let err = machine.run(
            &[0x80, 2, b'c', b'o', b's', b'\n', b's', b'y', b's', b't', b'e', b'm', b'\n', b')', b'R', b'.'],
            &mut |_| Ok(Vec::new()),
        );
        assert!(err.err().unwrap().contains("os.system"), "arbitrary callables are refused");
        machine = Machine::default();
        assert!(machine.run(&[0x80, 2, b'('], &mut |_| Ok(Vec::new())).is_err(), "truncated input");
    }
}
