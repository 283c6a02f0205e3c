//! A plugin that tries what a plugin must not get away with, chosen by its input's `do`:
//! `spin` (loop forever), `sleep` (block past any timeout), `allocate` (grow memory
//! without end), `write` (write into the workspace), `escape` (read a host file outside
//! the workspace), `connect` (open a TCP connection to `addr`), `flood` (write stdout
//! without end), `garbage` (answer with something that is not JSON), `fail` (exit 3),
//! `read` (read the file `path`, failing with the reason if it cannot) and `dial` (connect
//! to `addr`, failing with the reason if it cannot). Each succeeds only if the host lets
//! it, and then says so in its answer.

use std::io::{Read as _, Write as _};

fn arg<'a>(input: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\"");
    let Some(at) = input.find(&key) else { return "" };
    let rest = input[at + key.len()..].trim_start().trim_start_matches(':').trim_start();
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    &rest[..rest.find('"').unwrap_or(rest.len())]
}

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    match arg(&input, "do") {
        "spin" => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
        "allocate" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "write" => {
            std::fs::write("/workspace/planted.txt", "x").unwrap();
            println!("{{\"wrote\":true}}");
        }
        "escape" => {
            let got = std::fs::read_to_string("/etc/passwd").is_ok();
            println!("{{\"read_host_file\":{got}}}");
        }
        "connect" => {
            let got = std::net::TcpStream::connect(arg(&input, "addr")).is_ok();
            println!("{{\"connected\":{got}}}");
        }
        "flood" => loop {
            std::io::stdout().write_all(&[b'x'; 65536]).unwrap();
        },
        "read" => {
            let path = arg(&input, "path");
            match std::fs::read(path) {
                Ok(bytes) => println!("{{\"read\":{}}}", bytes.len()),
                Err(e) => {
                    eprintln!("cannot read {path}: {e}");
                    std::process::exit(1);
                }
            }
        }
        "dial" => {
            let addr = arg(&input, "addr");
            match std::net::TcpStream::connect(addr) {
                Ok(_) => println!("{{\"dialled\":true}}"),
                Err(e) => {
                    eprintln!("cannot connect to {addr}: {e}");
                    std::process::exit(1);
                }
            }
        }
        "garbage" => println!("this is not json"),
        "fail" => {
            eprintln!("failing on purpose");
            std::process::exit(3);
        }
        other => println!("{{\"echo\":\"{other}\"}}"),
    }
}
