//! A small Rust lexer: just enough to find module declarations, attributes and paths,
//! with comments, string and character literals and numbers left out, so a `crate::x` in
//! a doc comment or a string is never taken for a dependency.

/// One token and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) line: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An identifier or keyword (a raw identifier without its `r#`).
    Ident(String),
    /// `::`
    PathSep,
    /// Any other punctuation character.
    Punct(char),
}

impl Token {
    pub(crate) fn ident(&self) -> Option<&str> {
        match &self.kind {
            Kind::Ident(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is(&self, c: char) -> bool {
        self.kind == Kind::Punct(c)
    }

    pub(crate) fn is_ident(&self, name: &str) -> bool {
        self.ident() == Some(name)
    }
}

/// The tokens of `source`. Malformed input (an unterminated string or comment) ends the
/// token list where it starts; it never panics.
pub(crate) fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1u32;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                // Block comments nest in Rust.
                let mut depth = 0usize;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '"' => i = skip_string(&chars, i + 1, &mut line),
            // Raw strings, byte strings and C strings: r"..", r#".."#, b"..", br#".."#, c"..".
            'r' | 'b' | 'c' if starts_literal(&chars, i) => {
                let mut j = i;
                while matches!(at(j), 'r' | 'b' | 'c') {
                    j += 1;
                }
                let raw = chars[i..j].contains(&'r');
                if raw {
                    let mut hashes = 0;
                    while at(j) == '#' {
                        hashes += 1;
                        j += 1;
                    }
                    // The opening quote.
                    j += 1;
                    i = skip_raw_string(&chars, j, hashes, &mut line);
                } else if at(j) == '\'' {
                    i = skip_char(&chars, j + 1);
                } else {
                    i = skip_string(&chars, j + 1, &mut line);
                }
            }
            '\'' => {
                // A character literal ('a', '\n', '\u{1F600}'), or a lifetime or label.
                if at(i + 1) == '\\' || (at(i + 2) == '\'' && at(i + 1) != '\'') {
                    i = skip_char(&chars, i + 1);
                } else {
                    i += 1;
                    while at(i).is_alphanumeric() || at(i) == '_' {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() => {
                while at(i).is_alphanumeric()
                    || at(i) == '_'
                    || (at(i) == '.' && at(i + 1).is_ascii_digit())
                {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                if c == 'r' && at(i + 1) == '#' && (at(i + 2).is_alphabetic() || at(i + 2) == '_') {
                    j += 2;
                }
                let start = j;
                while at(j).is_alphanumeric() || at(j) == '_' {
                    j += 1;
                }
                out.push(Token {
                    kind: Kind::Ident(chars[start..j].iter().collect()),
                    line,
                });
                i = j;
            }
            ':' if at(i + 1) == ':' => {
                out.push(Token {
                    kind: Kind::PathSep,
                    line,
                });
                i += 2;
            }
            c => {
                out.push(Token {
                    kind: Kind::Punct(c),
                    line,
                });
                i += 1;
            }
        }
    }
    out
}

/// Whether a literal with a prefix (`r"`, `r#"`, `b"`, `b'`, `br"`, `c"`) starts at `i`.
fn starts_literal(chars: &[char], i: usize) -> bool {
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    // Not the tail of a longer identifier (`attr"` cannot occur, but `bar` followed by
    // whitespace and a string can; the previous character tells).
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return false;
    }
    let mut j = i;
    while matches!(at(j), 'r' | 'b' | 'c') && j - i < 2 {
        j += 1;
    }
    let prefix: String = chars[i..j].iter().collect();
    if !matches!(prefix.as_str(), "r" | "b" | "c" | "br" | "cr") {
        return false;
    }
    match at(j) {
        '"' => true,
        '\'' => prefix == "b",
        '#' if prefix.contains('r') => {
            let mut k = j;
            while at(k) == '#' {
                k += 1;
            }
            at(k) == '"'
        }
        _ => false,
    }
}

/// Past the end of a string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize, line: &mut u32) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            '\n' => {
                *line += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    i
}

/// Past the end of a raw string whose body starts at `i`, closed by `"` and `hashes` `#`s.
fn skip_raw_string(chars: &[char], mut i: usize, hashes: usize, line: &mut u32) -> usize {
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        if chars[i] == '\n' {
            *line += 1;
        }
        i += 1;
    }
    i
}

/// Past the end of a character literal whose body starts at `i`.
fn skip_char(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '\'' => return i + 1,
            '\n' => return i,
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idents(source: &str) -> Vec<String> {
        tokens(source)
            .into_iter()
            .filter_map(|t| t.ident().map(str::to_owned))
            .collect()
    }

    #[test]
    fn comments_strings_and_characters_hide_what_they_hold() {
        let source = r##"
            //! crate::a in a doc comment
            /* crate::b /* nested crate::c */ still */
            let s = "crate::d \" crate::e";
            let r = r#"crate::f " crate::g"#;
            let b = b"crate::h";
            let c = '"';
            let q = '\'';
            fn f<'a>(x: &'a str) -> &'a str { x }
            use crate::kept;
        "##;
        assert_eq!(
            idents(source),
            [
                "let", "s", "let", "r", "let", "b", "let", "c", "let", "q", "fn", "f", "x", "str",
                "str", "x", "use", "crate", "kept"
            ]
        );
    }

    #[test]
    fn lines_are_counted_through_comments_and_strings() {
        let t = tokens("/* one\ntwo */\n\"three\nfour\"\nuse");
        assert_eq!(t.last().map(|t| t.line), Some(5));
    }

    #[test]
    fn raw_identifiers_lose_their_prefix_and_paths_their_colons() {
        let t = tokens("r#type::x");
        assert_eq!(t[0].ident(), Some("type"));
        assert_eq!(t[1].kind, Kind::PathSep);
    }

    #[test]
    fn unterminated_input_ends_without_panicking() {
        for source in ["\"open", "/* open", "r#\"open", "'", "b'", "r#", "'\\"] {
            let _ = tokens(source);
        }
    }
}
