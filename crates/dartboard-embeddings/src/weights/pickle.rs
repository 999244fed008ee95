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
//!
//! The result is where each tensor lies (dtype, shape, strides, byte range), not its
//! data: [`crate::weights`] compares shapes with what the model expects first and
//! reads only tensors that fit. Storages must be stored uncompressed (as
//! `torch.save` writes them), so a tensor is read in place.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use tch::Kind;

use super::Stored;

/// `data.pkl` of a state dict is a few KB to a few MB; the cap keeps a compressed
/// entry that claims more from inflating without end.
const MAX_PICKLE: u64 = 256 << 20;

/// Where every named tensor of a `torch.save` zip archive lies in the file (nested
/// dicts are flattened with `.`-joined keys). Only the archive's directory and its
/// `data.pkl` are read: no tensor data, so nothing is allocated for a tensor before
/// its shape has been compared with what the model expects.
pub(super) fn read_torch_zip(path: &Path) -> Result<Vec<(String, Stored)>, String> {
    let file = dartboard_fs::open_regular(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
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
    archive
        .by_name(&pkl_name)
        .map_err(|e| e.to_string())?
        .take(MAX_PICKLE + 1)
        .read_to_end(&mut pickle)
        .map_err(|e| e.to_string())?;
    if pickle.len() as u64 > MAX_PICKLE {
        return Err(format!("data.pkl is larger than {MAX_PICKLE} bytes, which no state dict needs"));
    }
    // Each storage's place in the file, looked up once (tensors may share one).
    let mut cache: HashMap<String, (u64, u64)> = HashMap::new();
    let mut storages = |key: &str| -> Result<(u64, u64), String> {
        if let Some(found) = cache.get(key) {
            return Ok(*found);
        }
        let entry = archive.by_name(&format!("{prefix}data/{key}")).map_err(|e| format!("storage {key}: {e}"))?;
        // torch.save stores entries uncompressed, which is what lets a tensor be read
        // in place; the bytes must also lie inside the file.
        let start = entry.data_start().ok_or_else(|| format!("storage {key} has no data offset"))?;
        if entry.compression() != zip::CompressionMethod::Stored
            || entry.encrypted()
            || start.checked_add(entry.size()).is_none_or(|end| end > file_len)
        {
            return Err(format!("storage {key} is compressed, encrypted or larger than the file"));
        }
        let found = (start, entry.size());
        cache.insert(key.to_owned(), found);
        Ok(found)
    };
    let root = Machine::default().run(&pickle, &mut storages)?;
    let mut out = Vec::new();
    flatten(String::new(), root, &mut out)?;
    Ok(out)
}

/// Looks up a storage by key: where its bytes start in the file, and how many there are.
type Storages<'a> = dyn FnMut(&str) -> Result<(u64, u64), String> + 'a;

/// A state dict nests a few levels; anything deeper is hostile (and would recurse
/// on drop).
const MAX_DEPTH: u32 = 32;

#[derive(Clone)]
enum Value {
    /// None, booleans, floats and bytes: present in state dicts' metadata, never needed.
    None,
    Int(i64),
    Str(String),
    /// Containers carry their nesting depth, which is capped (see [`MAX_DEPTH`]).
    Tuple(Rc<Vec<Value>>, u32),
    List(Vec<Value>, u32),
    Dict(Vec<(Value, Value)>, u32),
    Global(String),
    Storage {
        kind: Kind,
        key: String,
    },
    Tensor(Rc<Stored>),
    Mark,
}

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::Tuple(_, d) | Value::List(_, d) | Value::Dict(_, d) => *d,
            _ => 0,
        }
    }
}

/// The depth a container has once `child` is inside it.
fn nest(container: u32, child: &Value) -> Result<u32, String> {
    let depth = container.max(child.depth() + 1);
    if depth > MAX_DEPTH {
        return Err(format!("containers nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(depth)
}

fn flatten(prefix: String, value: Value, out: &mut Vec<(String, Stored)>) -> Result<(), String> {
    match value {
        Value::Dict(items, _) => {
            for (k, v) in items {
                let Value::Str(k) = k else { continue };
                let name = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                flatten(name, v, out)?;
            }
            Ok(())
        }
        Value::Tensor(t) => {
            out.push((prefix, Stored::clone(&t)));
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

    /// A memoised value. Lists and dicts are mutable in Python and a state dict
    /// never refers to one twice; copying them on every reference would let a tiny
    /// file grow exponentially, so such references are refused.
    fn recall(&self, i: u32) -> Result<Value, String> {
        match self.memo.get(&i) {
            Some(Value::List(..) | Value::Dict(..)) => Err("a list or dict referenced twice".into()),
            Some(v) => Ok(v.clone()),
            None => Err("reference to an unknown memo entry".into()),
        }
    }

    fn push_tuple(&mut self, items: Vec<Value>) -> Result<(), String> {
        let depth = items.iter().try_fold(1, nest)?;
        self.stack.push(Value::Tuple(Rc::new(items), depth));
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        if let Some(Value::List(list, depth)) = self.stack.last_mut() {
            for item in items {
                *depth = nest(*depth, &item)?;
                list.push(item);
            }
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if let Some(Value::Dict(dict, depth)) = self.stack.last_mut() {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                *depth = nest(nest(*depth, &k)?, &v)?;
                dict.push((k, v));
            }
        }
        Ok(())
    }

    fn run(mut self, data: &[u8], storage: &mut Storages<'_>) -> Result<Value, String> {
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
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()), 1)),
                b'}' => self.stack.push(Value::Dict(Vec::new(), 1)),
                b']' => self.stack.push(Value::List(Vec::new(), 1)),
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
                    let v = self.recall(u32::from(i))?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = u32::from_le_bytes(r.take(4)?.try_into().unwrap());
                    let v = self.recall(i)?;
                    self.stack.push(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_tuple(items)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self.stack.len().checked_sub(n).ok_or("TUPLE underflow")?;
                    let items = self.stack.split_off(at);
                    self.push_tuple(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
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
                    self.stack.push(Value::Dict(Vec::new(), 1));
                }
                other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
            }
        }
    }
}

fn persistent_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items, _) = pid else { return Err("persistent id is not a tuple".into()) };
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
        Value::Tuple(items, _) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) if *n >= 0 => Ok(*n),
                _ => Err("shape or stride entry is not a non-negative integer".to_owned()),
            })
            .collect(),
        _ => Err("shape is not a tuple".into()),
    }
}

fn reduce(callable: Value, args: Value, storage: &mut Storages<'_>) -> Result<Value, String> {
    let Value::Global(name) = callable else { return Err("REDUCE on a non-global".into()) };
    let Value::Tuple(args, _) = args else { return Err("REDUCE arguments are not a tuple".into()) };
    match name.as_str() {
        "collections.OrderedDict" => Ok(Value::Dict(Vec::new(), 1)),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let [Value::Storage { kind, key }, Value::Int(offset), size, stride, ..] = args.as_slice() else {
                return Err("unexpected _rebuild_tensor_v2 arguments".into());
            };
            let (start, bytes) = storage(key)?;
            let element = kind.elt_size_in_bytes() as u64;
            let available = i64::try_from(bytes / element).map_err(|e| e.to_string())?;
            let (size, stride) = (ints(size)?, ints(stride)?);
            // The view must lie inside its storage and not be larger than it: a
            // zero-stride "expansion" could otherwise ask for any amount of memory.
            let numel: i64 = size.iter().try_fold(1i64, |n, s| n.checked_mul(*s)).ok_or("tensor size overflows")?;
            let last = size.iter().zip(&stride).try_fold(*offset, |end, (s, st)| {
                if *s == 0 {
                    Some(end)
                } else {
                    (s - 1).checked_mul(*st).and_then(|x| x.checked_add(end))
                }
            });
            if size.len() != stride.len()
                || *offset < 0
                || numel > available
                || (numel > 0 && last.is_none_or(|l| l >= available))
            {
                return Err(format!(
                    "tensor view {size:?}/{stride:?}+{offset} does not fit its storage of {available}"
                ));
            }
            // From the first element the view reaches to the last: what is read.
            let span = match last {
                Some(last) if numel > 0 => last - offset + 1,
                _ => 0,
            };
            Ok(Value::Tensor(Rc::new(Stored {
                shard: 0,
                kind: *kind,
                shape: size,
                stride,
                // An empty view reads nothing, and its offset need not lie inside.
                start: if span > 0 { start + *offset as u64 * element } else { start },
                span: span as u64,
            })))
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

    fn no_storage(_: &str) -> Result<(u64, u64), String> {
        Err("no storage".into())
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pytorch_model.bin");
        std::fs::write(&path, b"definitely not a zip").unwrap();
        assert!(read_torch_zip(&path).unwrap_err().contains("zip"));
        let call = [0x80, 2, b'c', b'o', b's', b'\n', b's', b'y', b's', b't', b'e', b'm', b'\n', b')', b'R', b'.'];
        let err = Machine::default().run(&call, &mut no_storage);
        assert!(err.err().unwrap().contains("os.system"), "arbitrary callables are refused");
        assert!(Machine::default().run(&[0x80, 2, b'('], &mut no_storage).is_err(), "truncated input");
        // 10 000 nested lists: refused, not a stack overflow.
        let mut deep = vec![0x80, 2];
        deep.extend(std::iter::repeat_n(b']', 10_000));
        deep.extend(std::iter::repeat_n(b'a', 9_999));
        deep.push(b'.');
        assert!(Machine::default().run(&deep, &mut no_storage).err().unwrap().contains("nested"));
        // A list memoised and referenced again and again would double each time.
        let bomb = [0x80, 2, b']', b'q', 0, b'(', b'h', 0, b'h', 0, b'e', b'.'];
        assert!(Machine::default().run(&bomb, &mut no_storage).err().unwrap().contains("referenced twice"));
    }

    #[test]
    fn views_must_fit_their_storage() {
        let tuple = |v: Vec<Value>| Value::Tuple(Rc::new(v), 1);
        let call = |size: Vec<i64>, stride: Vec<i64>| {
            let args = tuple(vec![
                Value::Storage { kind: Kind::Float, key: "0".into() },
                Value::Int(0),
                tuple(size.into_iter().map(Value::Int).collect()),
                tuple(stride.into_iter().map(Value::Int).collect()),
            ]);
            // Four f32 at byte 100 of the file.
            let mut get = |_: &str| -> Result<(u64, u64), String> { Ok((100, 16)) };
            reduce(Value::Global("torch._utils._rebuild_tensor_v2".into()), args, &mut get)
        };
        assert!(call(vec![2, 2], vec![2, 1]).is_ok());
        assert!(call(vec![100_000, 100_000], vec![0, 0]).is_err(), "zero-stride expansion");
        assert!(call(vec![4, 2], vec![2, 1]).is_err(), "past the end");
    }
}
