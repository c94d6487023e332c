//! Realistic sample data: a plain-SQL dump whose entropy resembles real tables (names,
//! emails, amounts, timestamps, free text, ids — roughly 3:1 under zstd, unlike pgbench's
//! blank filler), and a mixed file tree with many small files. Deterministic per seed.

use std::io::{BufWriter, Write};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Error, Result};

const FIRST: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Karen",
    "Amara",
    "Nguyen",
    "Sofia",
    "Mateo",
    "Aisha",
    "Yuki",
    "Lars",
    "Ingrid",
    "Omar",
    "Fatima",
    "Pierre",
    "Chloé",
    "Jürgen",
    "Zoë",
];
const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Okafor",
    "Tanaka",
    "Johansson",
    "Dubois",
    "Müller",
    "Rossi",
    "Kowalski",
    "Novak",
    "Haddad",
];
const CITIES: &[&str] = &[
    "Berlin",
    "Lisbon",
    "Osaka",
    "Toronto",
    "Nairobi",
    "Austin",
    "Lyon",
    "Kraków",
    "Melbourne",
    "Bogotá",
    "Oslo",
    "Seoul",
    "Dublin",
    "Porto",
    "Denver",
    "Cape Town",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.test",
    "corp.example",
    "inbox.example.org",
    "post.example.net",
];
const WORDS: &[&str] = &[
    "order",
    "shipped",
    "late",
    "customer",
    "asked",
    "refund",
    "invoice",
    "paid",
    "the",
    "a",
    "was",
    "for",
    "with",
    "package",
    "damaged",
    "replacement",
    "sent",
    "warehouse",
    "delay",
    "because",
    "of",
    "weather",
    "please",
    "contact",
    "support",
    "again",
    "tomorrow",
    "delivered",
    "signed",
    "by",
    "neighbour",
    "address",
    "updated",
    "billing",
    "discount",
    "applied",
    "coupon",
    "expired",
    "priority",
    "express",
    "standard",
    "returned",
    "item",
    "size",
    "colour",
    "wrong",
    "exchange",
    "approved",
    "pending",
    "review",
    "note",
    "called",
    "twice",
    "no",
    "answer",
    "left",
    "voicemail",
    "escalated",
    "to",
    "manager",
    "resolved",
    "closed",
    "ticket",
];
const STATUSES: &[&str] = &[
    "new",
    "paid",
    "shipped",
    "delivered",
    "returned",
    "cancelled",
];

fn pick<'a>(r: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs[r.gen_range(0..xs.len())]
}

fn sentence(r: &mut StdRng, w: &mut impl Write) -> std::io::Result<()> {
    let n = r.gen_range(4..18);
    for i in 0..n {
        if i > 0 {
            w.write_all(b" ")?;
        }
        w.write_all(pick(r, WORDS).as_bytes())?;
    }
    Ok(())
}

fn timestamp(r: &mut StdRng) -> String {
    let secs = 1_600_000_000i64 + r.gen_range(0..150_000_000i64);
    chrono::DateTime::from_timestamp(secs, 0)
        .expect("in range")
        .format("%Y-%m-%d %H:%M:%S+00")
        .to_string()
}

/// Writes about `size` bytes of a pg_dump-style plain SQL dump.
pub fn write_sql_dump(w: &mut impl Write, size: u64, seed: u64) -> std::io::Result<u64> {
    let mut r = StdRng::seed_from_u64(seed);
    let mut cw = CountingWriter { inner: w, n: 0 };
    writeln!(cw, "--\n-- PostgreSQL database dump (lifeboat sample data)\n--\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n")?;
    writeln!(cw, "CREATE TABLE public.customers (id bigint NOT NULL, name text, email text, city text, created_at timestamp with time zone, balance numeric(12,2), note text);")?;
    writeln!(cw, "CREATE TABLE public.orders (id bigint NOT NULL, customer_id bigint, ref uuid, status text, amount numeric(12,2), ordered_at timestamp with time zone, comment text);\n")?;
    let customers = (size / 2 / 120).max(10);
    writeln!(
        cw,
        "COPY public.customers (id, name, email, city, created_at, balance, note) FROM stdin;"
    )?;
    for id in 1..=customers {
        if cw.n >= size / 2 {
            break;
        }
        let (f, l) = (pick(&mut r, FIRST), pick(&mut r, LAST));
        write!(
            cw,
            "{id}\t{f} {l}\t{}.{}{}@{}\t{}\t{}\t{}.{:02}\t",
            f.to_lowercase(),
            l.to_lowercase(),
            r.gen_range(1..999),
            pick(&mut r, DOMAINS),
            pick(&mut r, CITIES),
            timestamp(&mut r),
            r.gen_range(0..50_000),
            r.gen_range(0..100)
        )?;
        sentence(&mut r, &mut cw)?;
        cw.write_all(b"\n")?;
    }
    writeln!(cw, "\\.\n\nCOPY public.orders (id, customer_id, ref, status, amount, ordered_at, comment) FROM stdin;")?;
    let mut id = 1u64;
    while cw.n < size {
        let uuid: u128 = r.gen();
        let h = format!("{uuid:032x}");
        write!(
            cw,
            "{id}\t{}\t{}-{}-{}-{}-{}\t{}\t{}.{:02}\t{}\t",
            r.gen_range(1..=customers),
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..],
            pick(&mut r, STATUSES),
            r.gen_range(1..5_000),
            r.gen_range(0..100),
            timestamp(&mut r)
        )?;
        sentence(&mut r, &mut cw)?;
        cw.write_all(b"\n")?;
        id += 1;
    }
    writeln!(cw, "\\.\n\n-- PostgreSQL database dump complete\n")?;
    Ok(cw.n)
}

pub fn write_sql_dump_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    let f = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    write_sql_dump(&mut w, size, seed).map_err(|e| Error::io("write", path, e))?;
    w.flush().map_err(|e| Error::io("write", path, e))?;
    Ok(())
}

/// Writes a mixed tree of about `size` bytes: many small text files, some medium CSV/SQL
/// files, a few incompressible binaries, nested directories, symlinks and a hard link.
pub fn write_tree(root: &Path, size: u64, seed: u64) -> Result<()> {
    let mut r = StdRng::seed_from_u64(seed);
    let io = |e, p: &Path| Error::io("write", p, e);
    let mut written = 0u64;
    let mut n = 0u64;
    while written < size {
        let dir = root.join(format!(
            "d{:02}/s{:02}",
            r.gen_range(0..16),
            r.gen_range(0..16)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| io(e, &dir))?;
        let roll = r.gen_range(0..100);
        let path;
        let len;
        if roll < 80 {
            // small text file, 200 B – 16 KiB
            path = dir.join(format!("note-{n}.txt"));
            let mut buf = Vec::new();
            let target = r.gen_range(200..16_384);
            while buf.len() < target {
                sentence(&mut r, &mut buf).map_err(|e| io(e, &path))?;
                buf.push(b'\n');
            }
            len = buf.len() as u64;
            std::fs::write(&path, &buf).map_err(|e| io(e, &path))?;
        } else if roll < 97 {
            // medium SQL/CSV-like file, 16 KiB – 512 KiB
            path = dir.join(format!("table-{n}.sql"));
            let mut buf = Vec::new();
            len = write_sql_dump(&mut buf, r.gen_range(16_384..512 << 10), r.gen())
                .map_err(|e| io(e, &path))?;
            std::fs::write(&path, &buf).map_err(|e| io(e, &path))?;
        } else {
            // incompressible binary, 64 KiB – 1 MiB
            path = dir.join(format!("blob-{n}.bin"));
            let mut buf = vec![0u8; r.gen_range(65_536..1 << 20)];
            r.fill(&mut buf[..]);
            len = buf.len() as u64;
            std::fs::write(&path, &buf).map_err(|e| io(e, &path))?;
        }
        if n % 500 == 7 {
            let link = dir.join(format!("link-{n}"));
            let _ = std::os::unix::fs::symlink(path.file_name().expect("file name"), &link);
        }
        if n % 997 == 3 {
            let _ = std::fs::hard_link(&path, dir.join(format!("hardlink-{n}")));
        }
        written += len;
        n += 1;
    }
    Ok(())
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
