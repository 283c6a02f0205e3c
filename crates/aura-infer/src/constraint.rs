//! Constrained decoding, as a mask over tokens at every step: the output must be one JSON
//! value valid against a JSON schema ([`Constraint::JsonSchema`], and
//! [`Constraint::JsonSchemaAfter`] when its beginning is already written), any JSON object
//! ([`Constraint::JsonObject`], [`Constraint::JsonObjectAfter`]), or a call of one of a
//! list of tools ([`Constraint::ToolCall`]).
//!
//! # How
//!
//! A schema is compiled once into a table of nodes (object, array, string, number,
//! literal, union); "any JSON object" is just the schema `{"type": "object"}`. A
//! character-level recogniser runs over the output: its state is a short list of paths,
//! one per way the text so far can still be read (a union opens one path per alternative
//! that accepts the next character; identical paths merge), and each path is a stack of
//! open containers (node, which listed keys were seen, how many items were written)
//! shared between copies, plus a small `Copy` lexical mode (inside a key matched against
//! the allowed names, inside a string counting characters, inside a number or a literal).
//!
//! At each step the vocabulary, sorted by text, is walked once: a token shares the states
//! of its common prefix with the one before it, so each distinct prefix is fed once, and
//! when a prefix dies every token that begins with it is masked without being looked at.
//! Inside a string most tokens are plain text (no quote, backslash or control character),
//! which the string takes as it is: those are allowed without a walk, so a mask over
//! SmolLM2's 49k-token vocabulary costs 0.1 to 0.6 ms, in a string or out of it. Special
//! tokens are always masked, except the end-of-sequence token where the value may
//! end there (a top-level number); generation ends as soon as nothing more can be
//! written. The mask is a pure function of the state (the tables are sorted, nothing
//! iterates a hash map), so constrained decoding is as deterministic as the rest.
//!
//! # The schema subset
//!
//! Enforced: `type` (one or a list), `properties`, `required`, `additionalProperties`
//! (`false`, `true` or a schema), `items` (a schema or `false`), `prefixItems`,
//! `minItems`, `maxItems`, `minLength`, `maxLength` (in code points), `minimum`,
//! `maximum`, `exclusiveMinimum` and `exclusiveMaximum` on integers, `enum`, `const`,
//! `anyOf` and `oneOf` (both as alternatives: `oneOf`'s exclusivity is not checked),
//! `allOf` with one schema, and `$ref` to a JSON pointer in the same document (`#`,
//! `#/$defs/..`, `#/definitions/..`), recursive ones included. Choices worth knowing:
//!
//! - An object schema with `properties` but no `additionalProperties` allows only the
//!   listed keys (as OpenAI's strict mode requires anyway): a constrained model should not
//!   invent keys. Without `properties`, any keys are allowed. A required key that is not
//!   listed takes the `additionalProperties` schema.
//! - A schema without `type` takes its type from its keywords (`properties` means an
//!   object, `items` an array, `minLength` a string); with none of those it allows any
//!   value.
//! - Keys may not repeat, and must all be written before `}`; repeats of keys that are
//!   not listed (allowed by `additionalProperties`) are not detected. Keys are matched
//!   as serde_json writes them: a listed name with an escape must use that escape, and an
//!   unlisted key in an object with listed ones may not use `\u` or `\/` escapes, so that
//!   it can never be a listed name in disguise.
//! - `enum` and `const` values must be written as serde_json writes them (compact).
//! - A bounded integer's digits are allowed only while some way of going on ends within
//!   the bounds (so `3` is refused at once for `10..=20`), and its magnitude stays below
//!   `u64::MAX` unless that side is open. Bounds on non-integer numbers are refused
//!   (schemars writes them only for integers: `"minimum": 0` for unsigned ones).
//! - Integers have no fraction or exponent (`1.0` is refused). Numbers stay below 1e308
//!   (integer digits plus exponent at most 308), since serde_json refuses numbers beyond
//!   `f64`'s range; strings refuse lone surrogate escapes, which serde_json refuses too.
//! - A schema that no value can satisfy (`false`, an empty `enum` after `type`, more
//!   required items than allowed ones) is refused when compiled; one that only recursion
//!   makes unsatisfiable fails when no token can continue.
//!
//! Not enforced, and documented as such: `pattern` and `format` (a regular-expression
//! engine is out of this crate's budget); annotations (`title`, `description`, `default`,
//! `examples`, ..) are ignored. Every other keyword (`multipleOf`,
//! `uniqueItems`, `not`, `if`, `patternProperties`, ..) is refused with an error rather
//! than silently dropped. Limits: 64 levels of nesting, 128 listed properties per object,
//! 64 live paths (further alternatives are dropped, which can only refuse text, never
//! admit invalid text), and unions nested 16 deep when choosing how a value begins.
//! Whitespace outside strings is limited to two characters in a row so that a small
//! model cannot wander off into blank space; the value must begin at once, and nothing
//! may follow it.
//!
//! A tool call is the union, over the tools, of objects with exactly the keys `name` (the
//! tool's name as a `const`) and `arguments` (its parameters schema, compiled with its own
//! `$ref`s; a null schema allows any object). A call that may be replaced by plain text
//! (`required: false`) is refused: that needs a grammar over free text, which this
//! recogniser does not have.

mod compile;

use std::rc::Rc;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::{Constraint, Model};

/// Deepest nesting of containers accepted.
const MAX_DEPTH: usize = 64;
/// Whitespace characters allowed in a row: enough for formatting, few enough that a
/// small model cannot wander off into blank space.
const MAX_WHITESPACE_RUN: u8 = 2;
/// Live paths kept at once: unions that overlap for a long stretch cannot blow up.
const MAX_PATHS: usize = 64;
/// How deep unions are expanded when a value begins, which bounds left-recursive `$ref`s.
const MAX_UNION_DEPTH: u8 = 16;

type NodeId = u32;

// The nodes every table begins with (see `compile::Compiler::new`).
/// Any JSON value.
const ANY: NodeId = 0;
/// Any JSON object.
const ANY_OBJECT: NodeId = 1;
const ANY_ARRAY: NodeId = 2;
const ANY_STRING: NodeId = 3;
const ANY_NUMBER: NodeId = 4;
const BOOLEAN: NodeId = 5;
const NULL: NodeId = 6;

/// One compiled schema.
#[derive(Debug)]
enum Node {
    /// Keys from `props` (sorted by text) or, when `additional` is set, any others.
    Object {
        props: Vec<Prop>,
        /// Bit i: `props[i]` is required.
        required: u128,
        additional: Option<NodeId>,
    },
    /// Item i is `prefix[i]`, then `items`; None: no more items.
    Array {
        prefix: Vec<NodeId>,
        items: Option<NodeId>,
        min: u32,
        max: u32,
    },
    /// Length bounds in code points.
    String { min: u32, max: u32 },
    /// `bounds`: the inclusive range of an integer with `minimum`, `maximum` or their
    /// exclusive forms.
    Number {
        integer: bool,
        bounds: Option<(i128, i128)>,
    },
    /// One of these texts exactly (sorted, distinct): `enum`, `const`, booleans, null.
    Literal(Vec<String>),
    /// Any of these.
    Union(Vec<NodeId>),
}

impl Node {
    /// The schema of array item `i`.
    fn item(&self, i: u32) -> Option<NodeId> {
        match self {
            Node::Array { prefix, items, .. } => prefix.get(i as usize).copied().or(*items),
            _ => None,
        }
    }
}

/// A listed property.
#[derive(Debug)]
struct Prop {
    /// The key as written after its opening quote: serde_json's escaping of the name,
    /// then the closing quote.
    text: String,
    node: NodeId,
}

/// A compiled schema.
#[derive(Debug)]
pub(crate) struct Schema {
    nodes: Vec<Node>,
    root: NodeId,
}

/// Bit `i` of a set of listed keys.
fn bit(i: usize) -> u128 {
    1u128 << i
}

/// The range of `lo..hi` (texts sorted, all sharing their first `len` bytes) whose next
/// bytes are `bytes`; contiguous because the texts are sorted.
fn narrow<'a>(
    text: impl Fn(usize) -> &'a [u8],
    lo: usize,
    hi: usize,
    len: usize,
    bytes: &[u8],
) -> (usize, usize) {
    let matches = |i: usize| text(i).get(len..).is_some_and(|t| t.starts_with(bytes));
    let Some(first) = (lo..hi).find(|&i| matches(i)) else {
        return (lo, lo);
    };
    let end = (first..hi).find(|&i| !matches(i)).unwrap_or(hi);
    (first, end)
}

impl Schema {
    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// The paths before anything is written.
    fn initial(&self) -> Vec<Path> {
        vec![Path {
            frames: Rc::default(),
            mode: Mode::Value(self.root),
            ws: 0,
        }]
    }

    /// Feeds `c` to every path in `paths`, writing the survivors to `out`.
    fn step(&self, paths: &[Path], c: char, out: &mut Vec<Path>) {
        out.clear();
        for p in paths {
            self.feed(p, c, out);
        }
    }

    fn feed(&self, p: &Path, c: char, out: &mut Vec<Path>) {
        let ws = matches!(c, ' ' | '\t' | '\n' | '\r');
        match p.mode {
            Mode::Done => {}
            Mode::Str { node, lex } => {
                let (min, max) = match self.node(node) {
                    Node::String { min, max } => (*min, *max),
                    _ => (0, u32::MAX),
                };
                match lex.feed(c, max) {
                    StrStep::Reject => {}
                    StrStep::More(lex) => emit(out, p.with(Mode::Str { node, lex })),
                    StrStep::Closed if lex.count >= min => emit(out, p.value_done()),
                    StrStep::Closed => {}
                }
            }
            Mode::Key {
                lo,
                hi,
                len,
                lex,
                free,
            } => self.key(p, (lo, hi, len), lex, free, c, out),
            Mode::Num(num) => match num.next(c) {
                Some(num) if self.reachable(num) => emit(out, p.with(Mode::Num(num))),
                Some(_) => {}
                // The number ended; the character belongs to what follows it.
                None if self.can_end(num) => self.feed(&p.value_done(), c, out),
                None => {}
            },
            Mode::Lit { node, lo, hi, len } => {
                let Node::Literal(texts) = self.node(node) else {
                    return;
                };
                let (lo, hi, len) = (usize::from(lo), usize::from(hi), usize::from(len));
                if !self.literal(p, node, (lo, hi, len), c, out) && texts[lo].len() == len {
                    // The literal was complete (a number that might have gone on).
                    self.feed(&p.value_done(), c, out);
                }
            }
            _ if ws => {
                if !p.frames.is_empty() && p.ws < MAX_WHITESPACE_RUN {
                    let mut next = p.clone();
                    next.ws += 1;
                    emit(out, next);
                }
            }
            Mode::Value(node) => self.start(node, p, c, out, 0),
            Mode::ObjFirst | Mode::ObjNext => {
                let Some(&Frame::Object { node, seen }) = p.frames.last() else {
                    return;
                };
                let Node::Object {
                    props,
                    required,
                    additional,
                } = self.node(node)
                else {
                    return;
                };
                match c {
                    '}' if p.mode == Mode::ObjFirst && required & !seen == 0 => {
                        emit(out, p.close());
                    }
                    '"' if additional.is_some() || (0..props.len()).any(|i| seen & bit(i) == 0) => {
                        emit(
                            out,
                            p.with(Mode::Key {
                                lo: 0,
                                hi: props.len() as u16,
                                len: 0,
                                lex: StrLex::default(),
                                free: additional.is_some(),
                            }),
                        );
                    }
                    _ => {}
                }
            }
            Mode::Colon(node) => {
                if c == ':' {
                    emit(out, p.with(Mode::Value(node)));
                }
            }
            Mode::ArrFirst => {
                let Some(&Frame::Array { node, .. }) = p.frames.last() else {
                    return;
                };
                let array = self.node(node);
                let Node::Array { min, .. } = array else {
                    return;
                };
                if c == ']' {
                    if *min == 0 {
                        emit(out, p.close());
                    }
                } else if let Some(item) = array.item(0) {
                    let next = p.with_top(Frame::Array { node, count: 1 }, Mode::Value(item));
                    self.start(item, &next, c, out, 0);
                }
            }
            Mode::After => match p.frames.last() {
                Some(&Frame::Object { node, seen }) => {
                    let Node::Object {
                        props,
                        required,
                        additional,
                    } = self.node(node)
                    else {
                        return;
                    };
                    match c {
                        ',' if additional.is_some()
                            || (0..props.len()).any(|i| seen & bit(i) == 0) =>
                        {
                            emit(out, p.with(Mode::ObjNext));
                        }
                        '}' if required & !seen == 0 => emit(out, p.close()),
                        _ => {}
                    }
                }
                Some(&Frame::Array { node, count }) => {
                    let array = self.node(node);
                    let Node::Array { min, max, .. } = array else {
                        return;
                    };
                    match c {
                        ',' if count < *max => {
                            if let Some(item) = array.item(count) {
                                emit(
                                    out,
                                    p.with_top(
                                        Frame::Array {
                                            node,
                                            count: count + 1,
                                        },
                                        Mode::Value(item),
                                    ),
                                );
                            }
                        }
                        ']' if count >= *min => emit(out, p.close()),
                        _ => {}
                    }
                }
                None => {}
            },
        }
    }

    /// A value of `node` begins with `c`: every alternative of a union that accepts it
    /// opens a path.
    fn start(&self, node: NodeId, p: &Path, c: char, out: &mut Vec<Path>, depth: u8) {
        match self.node(node) {
            Node::Union(alternatives) => {
                if depth < MAX_UNION_DEPTH {
                    for &a in alternatives {
                        self.start(a, p, c, out, depth + 1);
                    }
                }
            }
            Node::Object { .. } => {
                if c == '{' && p.frames.len() < MAX_DEPTH {
                    emit(out, p.push(Frame::Object { node, seen: 0 }, Mode::ObjFirst));
                }
            }
            Node::Array { .. } => {
                if c == '[' && p.frames.len() < MAX_DEPTH {
                    emit(out, p.push(Frame::Array { node, count: 0 }, Mode::ArrFirst));
                }
            }
            Node::String { .. } => {
                if c == '"' {
                    emit(
                        out,
                        p.with(Mode::Str {
                            node,
                            lex: StrLex::default(),
                        }),
                    );
                }
            }
            &Node::Number { integer, .. } => {
                let start = NumLex {
                    node,
                    integer,
                    part: NumPart::Start,
                    negative: false,
                    magnitude: 0,
                    digits: 0,
                    exp: 0,
                    exp_negative: false,
                };
                if let Some(num) = start.next(c).filter(|n| self.reachable(*n)) {
                    emit(out, p.with(Mode::Num(num)));
                }
            }
            Node::Literal(texts) => {
                self.literal(p, node, (0, texts.len(), 0), c, out);
            }
        }
    }

    /// Continues a literal with `c`; false if no text of it goes on that way.
    fn literal(
        &self,
        p: &Path,
        node: NodeId,
        (lo, hi, len): (usize, usize, usize),
        c: char,
        out: &mut Vec<Path>,
    ) -> bool {
        let Node::Literal(texts) = self.node(node) else {
            return false;
        };
        let mut buf = [0; 4];
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        let (lo, hi) = narrow(|i| texts[i].as_bytes(), lo, hi, len, bytes);
        if lo == hi {
            return false;
        }
        let len = len + bytes.len();
        if hi - lo == 1 && texts[lo].len() == len {
            // Nothing can follow: end now, so that generation stops as soon as it can.
            emit(out, p.value_done());
        } else {
            emit(
                out,
                p.with(Mode::Lit {
                    node,
                    lo: lo as u16,
                    hi: hi as u16,
                    len: len as u16,
                }),
            );
        }
        true
    }

    /// Inside a key: `c` narrows the listed names it can still be, or (where unlisted
    /// keys are allowed) continues a free one.
    fn key(
        &self,
        p: &Path,
        (lo, hi, len): (u16, u16, u16),
        lex: StrLex,
        free: bool,
        c: char,
        out: &mut Vec<Path>,
    ) {
        let Some(&Frame::Object { node, seen }) = p.frames.last() else {
            return;
        };
        let Node::Object {
            props, additional, ..
        } = self.node(node)
        else {
            return;
        };
        let mut buf = [0; 4];
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        let len = usize::from(len);
        let (lo, hi) = narrow(
            |i| props[i].text.as_bytes(),
            usize::from(lo),
            usize::from(hi),
            len,
            bytes,
        );
        let len = len + bytes.len();
        if c == '"' && lex.esc == 0 && !lex.high {
            // The key ends. A listed name's text ends with this quote and nothing else in
            // the range can (names are distinct), so an exact match is the first one.
            if lo < hi && props[lo].text.len() == len {
                if seen & bit(lo) == 0 {
                    emit(
                        out,
                        p.with_top(
                            Frame::Object {
                                node,
                                seen: seen | bit(lo),
                            },
                            Mode::Colon(props[lo].node),
                        ),
                    );
                }
                // Otherwise it repeats a key: refused.
            } else if let (true, Some(a)) = (free, additional) {
                emit(out, p.with(Mode::Colon(*a)));
            }
            return;
        }
        // An unlisted key must be written as serde_json would write it, so that it can
        // never spell a listed name with other escapes (which would hide a repeat).
        let free = free && !(lex.esc == 1 && matches!(c, 'u' | '/') && !props.is_empty());
        if !free && !(lo..hi).any(|i| seen & bit(i) == 0) {
            return;
        }
        if let StrStep::More(lex) = lex.feed(c, u32::MAX) {
            emit(
                out,
                p.with(Mode::Key {
                    lo: lo as u16,
                    hi: hi as u16,
                    // Names are shorter than this; past them only a free key goes on,
                    // with no candidates left, so the length no longer matters.
                    len: u16::try_from(len).unwrap_or(u16::MAX),
                    lex,
                    free,
                }),
            );
        }
    }
}

/// Adds a path unless an identical one is there (unions that converge merge, so the
/// paths through an array of unions do not multiply item by item).
fn emit(out: &mut Vec<Path>, p: Path) {
    if out.len() < MAX_PATHS && !out.contains(&p) {
        out.push(p);
    }
}

/// An open container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// `seen`: which listed keys were written (bit i: `props[i]`).
    Object { node: NodeId, seen: u128 },
    /// `count`: items begun.
    Array { node: NodeId, count: u32 },
}

/// Where in the text a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A value of this node is expected.
    Value(NodeId),
    /// After `{`: a key or `}`.
    ObjFirst,
    /// After `,` in an object: a key.
    ObjNext,
    /// Inside a key: `lo..hi` are the listed names it can still be, `len` bytes of their
    /// text matched; `free`: it may still be an unlisted key.
    Key {
        lo: u16,
        hi: u16,
        len: u16,
        lex: StrLex,
        free: bool,
    },
    /// After a key: `:`, then a value of this node.
    Colon(NodeId),
    /// After `[`: an item or `]`.
    ArrFirst,
    /// A value inside a container ended: `,` or the closing bracket.
    After,
    /// Inside a string value of a `String` node.
    Str {
        node: NodeId,
        lex: StrLex,
    },
    Num(NumLex),
    /// Inside a literal: `lo..hi` are the texts it can still be, `len` bytes matched.
    Lit {
        node: NodeId,
        lo: u16,
        hi: u16,
        len: u16,
    },
    /// The top-level value ended.
    Done,
}

/// One reading of the text so far.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Path {
    /// Open containers, outermost first; shared between copies until one changes.
    frames: Rc<Vec<Frame>>,
    mode: Mode,
    /// Whitespace characters just written.
    ws: u8,
}

impl Path {
    fn with(&self, mode: Mode) -> Path {
        Path {
            frames: Rc::clone(&self.frames),
            mode,
            ws: 0,
        }
    }

    fn with_top(&self, top: Frame, mode: Mode) -> Path {
        let mut next = self.with(mode);
        if let Some(last) = Rc::make_mut(&mut next.frames).last_mut() {
            *last = top;
        }
        next
    }

    fn push(&self, frame: Frame, mode: Mode) -> Path {
        let mut next = self.with(mode);
        Rc::make_mut(&mut next.frames).push(frame);
        next
    }

    fn close(&self) -> Path {
        let mut next = self.with(Mode::After);
        Rc::make_mut(&mut next.frames).pop();
        next.value_done()
    }

    /// A value just ended.
    fn value_done(&self) -> Path {
        self.with(if self.frames.is_empty() {
            Mode::Done
        } else {
            Mode::After
        })
    }

    /// How many characters of plain text (no quote, backslash or control character) this
    /// path can take as they are: inside a string, up to its length bound; inside a key
    /// that may be unlisted, any number. None elsewhere.
    fn room(&self, schema: &Schema) -> Option<u32> {
        match self.mode {
            Mode::Str { node, lex } if lex.esc == 0 && !lex.high => {
                let max = match schema.node(node) {
                    Node::String { max, .. } => *max,
                    _ => u32::MAX,
                };
                Some(max.saturating_sub(lex.count))
            }
            Mode::Key {
                lex, free: true, ..
            } if lex.esc == 0 && !lex.high => Some(u32::MAX),
            _ => None,
        }
    }

    /// Whether the output may end here: the value is complete, or is a number or literal
    /// at the top level that could end or go on.
    fn can_end(&self, schema: &Schema) -> bool {
        match self.mode {
            Mode::Done => true,
            Mode::Num(num) => self.frames.is_empty() && schema.can_end(num),
            Mode::Lit { node, lo, len, .. } => {
                self.frames.is_empty()
                    && matches!(schema.node(node), Node::Literal(t) if t[usize::from(lo)].len() == usize::from(len))
            }
            _ => false,
        }
    }
}

/// The lexical state inside a string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StrLex {
    /// Code points so far.
    count: u32,
    /// What an escape still needs: 0 none, 1 the character after `\`, 2..=5 hex digits.
    esc: u8,
    /// The hex digits of a `\u` escape so far.
    acc: u16,
    /// A high surrogate escape was just written: its low half must follow.
    high: bool,
}

enum StrStep {
    Reject,
    More(StrLex),
    Closed,
}

impl StrLex {
    /// Feeds one character of a string of at most `max` code points.
    fn feed(self, c: char, max: u32) -> StrStep {
        let mut l = self;
        match l.esc {
            0 if l.high => {
                if c != '\\' {
                    return StrStep::Reject;
                }
                l.esc = 1;
            }
            0 => match c {
                '"' => return StrStep::Closed,
                c if (c as u32) < 0x20 || l.count >= max => return StrStep::Reject,
                '\\' => l.esc = 1,
                _ => l.count += 1,
            },
            1 => match c {
                'u' => {
                    l.esc = 5;
                    l.acc = 0;
                }
                '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' if !l.high => {
                    l.esc = 0;
                    l.count += 1;
                }
                _ => return StrStep::Reject,
            },
            n => {
                let Some(d) = c.to_digit(16) else {
                    return StrStep::Reject;
                };
                l.acc = (l.acc << 4) | d as u16;
                l.esc = n - 1;
                // After two digits the escape's high byte is known: a low surrogate must
                // follow a high one and nothing else, or serde_json would refuse the text.
                if n == 4 && (0xDC..=0xDF).contains(&l.acc) != l.high {
                    return StrStep::Reject;
                }
                if n == 2 {
                    l.esc = 0;
                    if l.high {
                        // The pair is one code point, counted with its high half.
                        l.high = false;
                    } else {
                        l.count += 1;
                        l.high = (0xD8..=0xDB).contains(&(l.acc >> 8));
                    }
                }
            }
        }
        StrStep::More(l)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumPart {
    /// Before the first character.
    Start,
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl NumPart {
    fn can_end(self) -> bool {
        matches!(self, Self::Zero | Self::Int | Self::Frac | Self::Exp)
    }
}

/// serde_json refuses numbers beyond the range of `f64` (up to 1.8e308), so integer
/// digits plus a positive exponent stay within 308: every such number is below 1e308.
const MAX_MAGNITUDE: u16 = 308;

/// The lexical state inside a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NumLex {
    /// The `Number` node.
    node: NodeId,
    /// No fraction or exponent allowed.
    integer: bool,
    part: NumPart,
    negative: bool,
    /// The integer part's value (`u64::MAX` once it is that much or more).
    magnitude: u64,
    /// Digits before the point.
    digits: u16,
    /// The exponent's value so far (saturating), and its sign.
    exp: u16,
    exp_negative: bool,
}

impl NumLex {
    fn next(self, c: char) -> Option<Self> {
        use NumPart::*;
        let mut n = self;
        n.part = match (self.part, c) {
            (Start, '-') => {
                n.negative = true;
                Minus
            }
            (Start | Minus, '0') => Zero,
            (Start, '1'..='9') => Int,
            (Minus, '1'..='9') | (Int, '0'..='9') => Int,
            (Zero | Int, '.') if !self.integer => Dot,
            (Dot | Frac, '0'..='9') => Frac,
            (Zero | Int | Frac, 'e' | 'E') if !self.integer => E,
            (E, '+') => ESign,
            (E, '-') => {
                n.exp_negative = true;
                ESign
            }
            (E | ESign | Exp, '0'..='9') => Exp,
            _ => return None,
        };
        let digit = c.to_digit(10).unwrap_or(0) as u16;
        match n.part {
            Zero | Int => {
                n.digits = n.digits.saturating_add(1);
                n.magnitude = n
                    .magnitude
                    .saturating_mul(10)
                    .saturating_add(u64::from(digit));
            }
            Exp => n.exp = n.exp.saturating_mul(10).saturating_add(digit),
            _ => {}
        }
        // A negative exponent only underflows, which serde_json reads as zero.
        let magnitude = n
            .digits
            .saturating_add(if n.exp_negative { 0 } else { n.exp });
        (magnitude <= MAX_MAGNITUDE).then_some(n)
    }
}

impl Schema {
    fn bounds(&self, num: NumLex) -> Option<(i128, i128)> {
        match self.node(num.node) {
            Node::Number { bounds, .. } => *bounds,
            _ => None,
        }
    }

    /// The integer part's value, or None past `u64::MAX` (beyond any bound but
    /// `i128::MAX`, the open one).
    fn value(num: NumLex) -> Option<i128> {
        (num.magnitude != u64::MAX).then(|| {
            let m = i128::from(num.magnitude);
            if num.negative { -m } else { m }
        })
    }

    /// Whether the number may end here, within its bounds.
    fn can_end(&self, num: NumLex) -> bool {
        num.part.can_end()
            && self
                .bounds(num)
                .is_none_or(|(lo, hi)| match Self::value(num) {
                    Some(v) => lo <= v && v <= hi,
                    None if num.negative => lo == i128::MIN,
                    None => hi == i128::MAX,
                })
    }

    /// Whether some way of going on ends within the number's bounds, so that a bounded
    /// integer never leads into a dead end. (Bounded numbers are integers: no point or
    /// exponent can follow.)
    fn reachable(&self, num: NumLex) -> bool {
        let Some((lo, hi)) = self.bounds(num) else {
            return true;
        };
        match num.part {
            // `-0` is zero; any negative integer can follow.
            NumPart::Minus => lo <= 0,
            NumPart::Int => {
                let Some(m) = Self::value(num).map(i128::abs) else {
                    // Past u64::MAX: fine only where that side is open.
                    return if num.negative {
                        lo == i128::MIN
                    } else {
                        hi == i128::MAX
                    };
                };
                // With j more digits the value is in [m * 10^j, (m + 1) * 10^j - 1]; those
                // ranges only move away from zero, so stop once one is past the bound.
                let (mut a, mut b) = (m, m);
                loop {
                    let (x, y) = if num.negative { (-b, -a) } else { (a, b) };
                    if x.max(lo) <= y.min(hi) {
                        return true;
                    }
                    if (!num.negative && a > hi) || (num.negative && -a < lo) {
                        return false;
                    }
                    match (
                        a.checked_mul(10),
                        b.checked_mul(10).and_then(|b| b.checked_add(9)),
                    ) {
                        (Some(na), Some(nb)) => (a, b) = (na, nb),
                        _ => return false,
                    }
                }
            }
            _ => self.can_end(num),
        }
    }
}

/// A schema and the paths through the text so far.
#[derive(Debug)]
pub(crate) struct Recogniser {
    schema: Schema,
    paths: Vec<Path>,
    scratch: Vec<Path>,
}

impl Recogniser {
    pub(crate) fn new(schema: Schema) -> Self {
        Self {
            paths: schema.initial(),
            schema,
            scratch: Vec::new(),
        }
    }

    /// Feeds one character; false (and the state unchanged) if the text can no longer be
    /// the beginning of a valid value.
    pub(crate) fn feed(&mut self, c: char) -> bool {
        self.schema.step(&self.paths, c, &mut self.scratch);
        if self.scratch.is_empty() {
            return false;
        }
        std::mem::swap(&mut self.paths, &mut self.scratch);
        true
    }

    /// Whether nothing more can be written: the value is complete.
    pub(crate) fn is_complete(&self) -> bool {
        self.paths.iter().all(|p| p.mode == Mode::Done)
    }

    /// Whether the output may end here.
    pub(crate) fn can_end(&self) -> bool {
        self.paths.iter().any(|p| p.can_end(&self.schema))
    }
}

/// The vocabulary as constrained decoding walks it, built once per model.
#[derive(Debug)]
pub(crate) struct Vocab {
    /// Each token's text, or None for tokens never allowed (special tokens, tokens that
    /// are not whole UTF-8 text on their own).
    texts: Vec<Option<String>>,
    /// The allowed tokens sorted by text (ties by id).
    sorted: Vec<Entry>,
    /// The most characters in one token.
    longest: usize,
}

impl Vocab {
    pub(crate) fn new(texts: Vec<Option<String>>) -> Self {
        let text = |id: u32| texts[id as usize].as_deref().unwrap_or_default();
        let mut ids: Vec<u32> = (0..texts.len() as u32)
            .filter(|&id| !text(id).is_empty())
            .collect();
        ids.sort_by(|&a, &b| text(a).cmp(text(b)).then(a.cmp(&b)));
        let mut sorted = Vec::with_capacity(ids.len());
        let mut longest = 0;
        let mut previous = "";
        for id in ids {
            let t = text(id);
            let shared = t
                .chars()
                .zip(previous.chars())
                .take_while(|(a, b)| a == b)
                .count();
            let chars = t.chars().count();
            let plain = !t
                .chars()
                .any(|c| c == '"' || c == '\\' || (c as u32) < 0x20);
            sorted.push(Entry {
                id,
                shared,
                plain: plain.then(|| u32::try_from(chars).unwrap_or(u32::MAX)),
            });
            longest = longest.max(chars);
            previous = t;
        }
        Self {
            texts,
            sorted,
            longest,
        }
    }
}

/// A token in the sorted vocabulary.
#[derive(Debug)]
struct Entry {
    id: u32,
    /// Characters shared with the token before.
    shared: usize,
    /// Its length in characters if it is plain string content (no quote, backslash or
    /// control character), which a string absorbs without changing mode.
    plain: Option<u32>,
}

/// The recogniser for a constraint, its prefix (if any) already read: the schema or tool
/// list compiled, so every error a constraint can have is found here, before a model is
/// involved.
pub(crate) fn recogniser(constraint: &Constraint) -> Result<Recogniser> {
    let (schema, prefix) = match constraint {
        Constraint::JsonObject => (Schema::any_object(), None),
        Constraint::JsonObjectAfter(prefix) => (Schema::any_object(), Some(prefix)),
        Constraint::JsonSchema(schema) => (Schema::compile(schema)?, None),
        Constraint::JsonSchemaAfter { schema, prefix } => (Schema::compile(schema)?, Some(prefix)),
        Constraint::ToolCall { tools, required } => {
            if !required {
                return Err(Error::Constraint(
                    "tool-call constraints that allow plain text (`required: false`) are \
                         not supported; require a call or leave the output unconstrained"
                        .into(),
                ));
            }
            (Schema::tool_call(tools)?, None)
        }
    };
    let mut rec = Recogniser::new(schema);
    if let Some(prefix) = prefix
        && (!prefix.chars().all(|c| rec.feed(c)) || rec.is_complete())
    {
        let what = match constraint {
            Constraint::JsonObjectAfter(_) => "an unfinished JSON object",
            _ => "an unfinished JSON value valid against the schema",
        };
        return Err(Error::Constraint(format!(
            "`{prefix}` does not begin {what}"
        )));
    }
    Ok(rec)
}

/// The per-request state of a constraint.
pub(crate) struct Matcher {
    rec: Recogniser,
    vocab: Arc<Vocab>,
    eos: Vec<u32>,
    /// Paths after each character of the token being checked (reused between steps).
    levels: Vec<Vec<Path>>,
    allowed: Vec<bool>,
}

impl Matcher {
    pub(crate) fn new(model: &Model, constraint: &Constraint) -> Result<Self> {
        Ok(Self::with_vocab(
            recogniser(constraint)?,
            model.constraint_vocab(),
            model.tokenizer().eos_ids().to_vec(),
        ))
    }

    fn with_vocab(rec: Recogniser, vocab: Arc<Vocab>, eos: Vec<u32>) -> Self {
        Self {
            levels: vec![Vec::new(); vocab.longest + 1],
            allowed: Vec::new(),
            rec,
            vocab,
            eos,
        }
    }

    /// Marks in `self.allowed` the tokens that keep the output valid.
    fn allowed_tokens(&mut self) {
        let Self {
            rec,
            vocab,
            levels,
            allowed,
            ..
        } = self;
        allowed.clear();
        allowed.resize(vocab.texts.len(), false);
        levels[0].clone_from(&rec.paths);
        // `levels[i]` holds the paths after the first i characters of the current token,
        // valid for i <= `known`; `dead`: the previous token's first `dead + 1`
        // characters lead nowhere, so neither does any token that shares them.
        let mut known = 0;
        let mut dead: Option<usize> = None;
        // Inside a string most tokens are plain text, which a path inside a string (with
        // room for it) or inside a free key takes as it is: those need no walk. This is
        // exact, and turns the common case from a walk of the vocabulary into a scan.
        let room = rec.paths.iter().filter_map(|p| p.room(&rec.schema)).max();
        for &Entry { id, shared, plain } in &vocab.sorted {
            if let Some(d) = dead {
                if shared > d {
                    continue;
                }
                dead = None;
            }
            known = known.min(shared);
            if let (Some(n), Some(room)) = (plain, room)
                && n <= room
            {
                allowed[id as usize] = true;
                continue;
            }
            let text = vocab.texts[id as usize].as_deref().unwrap_or_default();
            let mut ok = true;
            for (i, c) in text.chars().enumerate().skip(known) {
                let (done, rest) = levels.split_at_mut(i + 1);
                rec.schema.step(&done[i], c, &mut rest[0]);
                if rest[0].is_empty() {
                    dead = Some(i);
                    known = i;
                    ok = false;
                    break;
                }
                known = i + 1;
            }
            allowed[id as usize] = ok;
        }
    }

    /// Sets the logits of disallowed tokens to -inf.
    pub(crate) fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        self.allowed_tokens();
        let eos_ok = self.rec.can_end() && !self.rec.is_complete();
        let mut any = false;
        for (id, l) in logits.iter_mut().enumerate() {
            let ok = self.allowed.get(id).copied().unwrap_or(false)
                || (eos_ok && self.eos.contains(&(id as u32)));
            if ok {
                any |= *l > f32::NEG_INFINITY;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        if any {
            Ok(())
        } else {
            Err(Error::Constraint(
                "no token can continue the JSON output".into(),
            ))
        }
    }

    /// Accepts a token; returns true when the constrained output is complete.
    pub(crate) fn advance(&mut self, token: u32) -> Result<bool> {
        if self.eos.contains(&token) && self.rec.can_end() {
            return Ok(true);
        }
        let text = self
            .vocab
            .texts
            .get(token as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::Constraint(format!("token {token} is not allowed")))?;
        for c in text.chars() {
            if !self.rec.feed(c) {
                return Err(Error::Constraint(format!(
                    "token {token} breaks the JSON output"
                )));
            }
        }
        Ok(self.rec.is_complete())
    }

    /// Whether ending now would leave the output incomplete.
    pub(crate) fn forbids_stop(&self) -> bool {
        !self.rec.can_end()
    }
}

#[cfg(test)]
mod tests;
