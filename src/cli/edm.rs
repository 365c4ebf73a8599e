//! `egress-dlp edm build`: a customer CSV in, an exact-data-match index out.
//!
//! The columns are chosen by name; each is normalised the way the rule whose
//! `edm.field` names it normalises its matches, so that a value found in traffic and the
//! same value in the table hash alike. The key file is created (mode 0600) when missing
//! and never written into the index; the index is written to a temporary file and
//! renamed into place, so a proxy reloading it never reads half an index.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{EXIT_ERROR, EXIT_OK, load_rules};
use crate::policy::edm::{ColumnSpec, EdmIndex, EdmKey, KEY_BYTES};

/// What `edm build` is asked to do.
#[derive(Debug, Clone)]
pub struct BuildArgs {
    /// The rules directory whose `edm:` rules say how each column is normalised.
    pub rules: PathBuf,
    /// Column names to index.
    pub columns: Vec<String>,
    /// The key file (created when missing).
    pub key: PathBuf,
    /// Where the index goes.
    pub out: PathBuf,
    /// The customer CSV (`-`: stdin).
    pub csv: PathBuf,
}

/// Runs `edm build`; returns the exit status (0 built, 2 error).
pub fn build(args: &BuildArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match run(args, out, err) {
        Ok(()) => EXIT_OK,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            EXIT_ERROR
        }
    }
}

fn run(args: &BuildArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), String> {
    let Some((set, _)) = load_rules(&args.rules, err) else {
        return Err(format!("the rules in {} do not load", args.rules.display()));
    };
    if args.columns.is_empty() {
        return Err("name at least one column (--column email)".into());
    }
    let mut specs = Vec::new();
    for column in &args.columns {
        let users: Vec<_> = set
            .rules()
            .iter()
            .filter(|r| r.edm.as_ref().is_some_and(|x| &x.field == column))
            .collect();
        let Some(first) = users.first() else {
            return Err(format!(
                "no rule in {} has `edm: {{field: {column}}}`: add it to the rule that detects \
                 this column, so the index knows how to normalise it",
                args.rules.display()
            ));
        };
        if let Some(other) = users.iter().find(|r| r.normalize != first.normalize) {
            return Err(format!(
                "rules {} and {} both use column {column} but normalise differently",
                first.id, other.id
            ));
        }
        specs.push(ColumnSpec {
            name: column.clone(),
            normalize: first.normalize,
        });
    }
    let key = load_or_create_key(&args.key, out)?;
    let started = Instant::now();
    let (index, stats) = if args.csv == Path::new("-") {
        EdmIndex::build(io::stdin().lock(), &specs, &key)
    } else {
        let file = fs::File::open(&args.csv)
            .map_err(|e| format!("cannot open {}: {e}", args.csv.display()))?;
        EdmIndex::build(io::BufReader::with_capacity(1 << 20, file), &specs, &key)
    }
    .map_err(|e| format!("{}: {e}", args.csv.display()))?;
    write_atomically(&args.out, |f| index.write_to(io::BufWriter::new(f)))
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    let size = fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        out,
        "indexed {} records in {:.1}s: {} -> {} ({} bytes, no plaintext)",
        stats.records,
        started.elapsed().as_secs_f64(),
        stats
            .values
            .iter()
            .map(|(c, n)| format!("{c} {n} values"))
            .collect::<Vec<_>>()
            .join(", "),
        args.out.display(),
        size
    );
    Ok(())
}

/// Reads the key file, or creates it (0600, 32 random bytes) when it does not exist.
fn load_or_create_key(path: &Path, out: &mut dyn Write) -> Result<EdmKey, String> {
    match fs::read_to_string(path) {
        Ok(text) => EdmKey::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut secret = [0u8; KEY_BYTES];
            getrandom::fill(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let mut file =
                open_private(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(EdmKey::file_text(&secret).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let _ = writeln!(
                out,
                "created key {} (mode 0600): keep it apart from the index",
                path.display()
            );
            Ok(EdmKey::from_secret(&secret))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Creates a new file only its owner can read.
fn open_private(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Writes `path` through a temporary file beside it, renamed into place when complete.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = fs::File::create(&tmp)?;
    let result = write(&file).and_then(|()| file.sync_all());
    drop(file);
    match result {
        Ok(()) => fs::rename(&tmp, path),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}
