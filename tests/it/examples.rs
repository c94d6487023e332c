//! Every example file the project ships parses.

use std::path::Path;

use lifeboat::drill::restore_tests::RestoreTests;

#[test]
fn every_restore_test_file_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("restore-tests");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let t = RestoreTests::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                t.row_counts.is_some() || !t.files.is_empty() || !t.sql.is_empty(),
                "{} checks nothing",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n >= 3, "expected the example restore-test files, found {n}");
}
