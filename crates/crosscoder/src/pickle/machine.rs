//! The stack machine: pickle opcodes interpreted over data-only [`Value`]s, with the allow-list of globals
//! checked before any `REDUCE` or `BUILD` (see the parent module).

use std::collections::HashMap;
use std::path::Path;

use super::{allowed_global, kind_name, Global, TensorRef, Value};
use crate::error::{CrosscoderError, Result};

/// The unpickler's state: the input, the position, the stack and the memo.
pub(super) struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    path: &'a Path,
}

impl<'a> Unpickler<'a> {
    pub(super) fn new(data: &'a [u8], path: &'a Path) -> Self {
        Unpickler {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            path,
        }
    }

    fn err(&self, reason: impl std::fmt::Display) -> CrosscoderError {
        CrosscoderError::Pickle {
            path: self.path.to_path_buf(),
            reason: format!("at byte {}: {reason}", self.pos),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| self.err("truncated"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| self.err("unterminated line"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn utf8(&mut self, n: usize) -> Result<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|e| self.err(format!("invalid UTF-8: {e}")))
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top_mut(&mut self) -> Result<&mut Value> {
        let pos = self.pos;
        let path = self.path.to_path_buf();
        self.stack
            .last_mut()
            .ok_or_else(|| CrosscoderError::Pickle {
                path,
                reason: format!("at byte {pos}: empty stack"),
            })
    }

    /// Pops everything above the topmost mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let i = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| self.err("no mark"))?;
        let items = self.stack.split_off(i + 1);
        self.stack.pop();
        Ok(items)
    }

    fn global(&self, module: &str, name: &str) -> Result<Value> {
        allowed_global(module, name)
            .map(Value::Global)
            .ok_or_else(|| CrosscoderError::ForbiddenPickleGlobal {
                path: self.path.to_path_buf(),
                module: module.to_string(),
                name: name.to_string(),
            })
    }

    fn memo_put(&mut self, idx: u32) -> Result<()> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.err("memo put on empty stack"))?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<()> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.err(format!("memo {idx} is unset")))?;
        self.stack.push(v);
        Ok(())
    }

    /// Runs the pickle program to its STOP opcode and returns the value it leaves.
    pub(super) fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            if op == b'.' {
                return self.pop(); // STOP
            }
            let handled = self.literal_op(op)?
                || self.container_op(op)?
                || self.memo_op(op)?
                || self.object_op(op)?;
            if !handled {
                return Err(self.err(format!("unsupported pickle opcode 0x{op:02x}")));
            }
        }
    }

    /// Framing (PROTO, FRAME), the mark, and literals: None, booleans, integers, floats, strings, bytes.
    /// `Ok(false)` when `op` is not one of them.
    fn literal_op(&mut self, op: u8) -> Result<bool> {
        match op {
            0x80 => {
                self.u8()?; // PROTO
            }
            0x95 => {
                self.u64()?; // FRAME
            }
            b'(' => self.stack.push(Value::Mark),
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'J' => {
                let v = self.u32()? as i32;
                self.stack.push(Value::Int(i64::from(v)));
            }
            b'K' => {
                let v = self.u8()?;
                self.stack.push(Value::Int(i64::from(v)));
            }
            b'M' => {
                let v = self.u16()?;
                self.stack.push(Value::Int(i64::from(v)));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = usize::from(self.u8()?);
                let b = self.take(n)?;
                if n > 8 {
                    return Err(self.err(format!("integer of {n} bytes does not fit in i64")));
                }
                let mut buf = if b.last().is_some_and(|x| x & 0x80 != 0) {
                    [0xffu8; 8]
                } else {
                    [0u8; 8]
                };
                buf[..n].copy_from_slice(b);
                self.stack.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => {
                let b = self.take(8)?;
                let v = f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                self.stack.push(Value::Float(v));
            }
            b'X' => {
                let n = self.u32()? as usize;
                let s = self.utf8(n)?;
                self.stack.push(Value::Str(s));
            }
            0x8c => {
                let n = usize::from(self.u8()?);
                let s = self.utf8(n)?;
                self.stack.push(Value::Str(s));
            }
            0x8d => {
                let n = usize::try_from(self.u64()?).map_err(|_| self.err("string too long"))?;
                let s = self.utf8(n)?;
                self.stack.push(Value::Str(s));
            }
            b'T' | b'B' => {
                let n = self.u32()? as usize;
                let b = self.take(n)?.to_vec();
                self.stack.push(Value::Bytes(b));
            }
            b'U' | b'C' => {
                let n = usize::from(self.u8()?);
                let b = self.take(n)?.to_vec();
                self.stack.push(Value::Bytes(b));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Tuples, lists, sets and dicts: empty ones, ones built from the stack, and appends to the one on top.
    /// `Ok(false)` when `op` is not one of them.
    fn container_op(&mut self, op: u8) -> Result<bool> {
        match op {
            b')' => self.stack.push(Value::Tuple(Vec::new())),
            b']' => self.stack.push(Value::List(Vec::new())),
            b'}' => self.stack.push(Value::Dict(Vec::new())),
            0x8f => self.stack.push(Value::List(Vec::new())), // EMPTY_SET (kept as a list)
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(items));
            }
            0x85 => {
                let a = self.pop()?;
                self.stack.push(Value::Tuple(vec![a]));
            }
            0x86 => {
                let b = self.pop()?;
                let a = self.pop()?;
                self.stack.push(Value::Tuple(vec![a, b]));
            }
            0x87 => {
                let c = self.pop()?;
                let b = self.pop()?;
                let a = self.pop()?;
                self.stack.push(Value::Tuple(vec![a, b, c]));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::List(items));
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.stack.push(Value::List(items)); // FROZENSET
            }
            b'd' => {
                let items = self.pop_mark()?;
                let dict = self.pairs(items)?;
                self.stack.push(Value::Dict(dict));
            }
            b'a' => {
                let v = self.pop()?;
                match self.top_mut()? {
                    Value::List(l) => l.push(v),
                    _ => return Err(self.err("APPEND to a non-list")),
                }
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                match self.top_mut()? {
                    Value::List(l) => l.extend(items),
                    _ => return Err(self.err("APPENDS to a non-list")),
                }
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                match self.top_mut()? {
                    Value::Dict(d) => d.push((k, v)),
                    _ => return Err(self.err("SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = self.pop_mark()?;
                let new = self.pairs(items)?;
                match self.top_mut()? {
                    Value::Dict(d) => d.extend(new),
                    _ => return Err(self.err("SETITEMS on a non-dict")),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The memo (PUT, GET) and stack housekeeping (POP, POP_MARK, DUP).
    /// `Ok(false)` when `op` is not one of them.
    fn memo_op(&mut self, op: u8) -> Result<bool> {
        match op {
            b'q' => {
                let i = u32::from(self.u8()?);
                self.memo_put(i)?;
            }
            b'r' => {
                let i = self.u32()?;
                self.memo_put(i)?;
            }
            0x94 => {
                let i = u32::try_from(self.memo.len()).map_err(|_| self.err("memo overflow"))?;
                self.memo_put(i)?;
            }
            b'h' => {
                let i = u32::from(self.u8()?);
                self.memo_get(i)?;
            }
            b'j' => {
                let i = self.u32()?;
                self.memo_get(i)?;
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self
                    .stack
                    .last()
                    .cloned()
                    .ok_or_else(|| self.err("DUP on empty stack"))?;
                self.stack.push(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Globals (allow-listed), persistent storage ids, REDUCE, and the object opcodes a state_dict may hold.
    /// `Ok(false)` when `op` is not one of them.
    fn object_op(&mut self, op: u8) -> Result<bool> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = self.global(&module, &name)?;
                self.stack.push(g);
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => {
                        let g = self.global(&m, &n)?;
                        self.stack.push(g);
                    }
                    _ => return Err(self.err("STACK_GLOBAL with non-string operands")),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.stack.push(storage);
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let v = self.reduce(func, args)?;
                self.stack.push(v);
            }
            0x81 => {
                // NEWOBJ: cls.__new__(cls, *args). No allow-listed class is built this way.
                let _args = self.pop()?;
                let cls = self.pop()?;
                return Err(self.err(format!(
                    "NEWOBJ of {cls:?} is not supported in a state_dict"
                )));
            }
            b'b' => {
                // BUILD: sets state on the object below (OrderedDict._metadata, Parameter state).
                // The state carries no weights, so it is dropped.
                let _state = self.pop()?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn persistent_load(&self, pid: Value) -> Result<Value> {
        // ('storage', storage_type, key, location, numel)
        let Value::Tuple(items) = pid else {
            return Err(self.err("persistent id is not a tuple"));
        };
        match items.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), key, _location, _numel]
                if tag == "storage" =>
            {
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => return Err(self.err("storage key is not a string")),
                };
                Ok(Value::Storage { dtype, key })
            }
            _ => Err(self.err(format!("unsupported persistent id {items:?}"))),
        }
    }

    fn reduce(&self, func: Value, args: Value) -> Result<Value> {
        let Value::Global(g) = func else {
            return Err(self.err(format!("REDUCE of a non-global {}", kind_name(&func))));
        };
        let Value::Tuple(args) = args else {
            return Err(self.err("REDUCE arguments are not a tuple"));
        };
        match g {
            Global::OrderedDict => {
                if args.is_empty() {
                    Ok(Value::Dict(Vec::new()))
                } else {
                    Err(self.err("OrderedDict with positional arguments"))
                }
            }
            Global::RebuildTensorV2 => {
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                let mut it = args.into_iter();
                let storage = it.next();
                let offset = it.next();
                let size = it.next();
                let stride = it.next();
                match (storage, offset, size, stride) {
                    (
                        Some(Value::Storage { dtype, key }),
                        Some(Value::Int(offset)),
                        Some(size),
                        Some(stride),
                    ) => {
                        let size = self.int_list(&size)?;
                        let stride = self.int_list(&stride)?;
                        if size.len() != stride.len() {
                            return Err(self.err("tensor size and stride differ in rank"));
                        }
                        let offset = usize::try_from(offset)
                            .map_err(|_| self.err("negative storage offset"))?;
                        Ok(Value::Tensor(TensorRef {
                            dtype,
                            key,
                            offset,
                            size,
                            stride,
                        }))
                    }
                    _ => Err(self.err("malformed _rebuild_tensor_v2 arguments")),
                }
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                match args.into_iter().next() {
                    Some(t @ Value::Tensor(_)) => Ok(t),
                    _ => Err(self.err("_rebuild_parameter without a tensor")),
                }
            }
            Global::RebuildFromTypeV2 => {
                // (func, type, args, state): apply the inner (allow-listed) rebuild function.
                let mut it = args.into_iter();
                match (it.next(), it.next(), it.next()) {
                    (
                        Some(inner),
                        Some(Value::Global(Global::TensorClass | Global::ParameterClass)),
                        Some(a),
                    ) => self.reduce(inner, a),
                    _ => {
                        Err(self.err("_rebuild_from_type_v2 of a tensor subclass is not supported"))
                    }
                }
            }
            Global::TensorClass | Global::ParameterClass | Global::Storage(_) => {
                Err(self.err(format!("calling {g:?} is not supported")))
            }
        }
    }

    /// The (key, value) pairs of a flat SETITEMS / DICT item list.
    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of dict items"));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    /// A tensor's size or stride: a tuple (or list) of non-negative ints.
    fn int_list(&self, v: &Value) -> Result<Vec<usize>> {
        match v {
            Value::Tuple(items) | Value::List(items) => items
                .iter()
                .map(|x| match x {
                    Value::Int(i) => {
                        usize::try_from(*i).map_err(|_| self.err(format!("negative dimension {i}")))
                    }
                    other => Err(self.err(format!("dimension {other:?} is not an int"))),
                })
                .collect(),
            other => Err(self.err(format!(
                "expected a tuple of ints, got {}",
                kind_name(other)
            ))),
        }
    }
}
