//! MariaDB end to end against real throwaway servers: tables with triggers, a routine, an
//! event and utf8mb4 text are backed up through a plan (with binary logging on, so the
//! snapshot records a binlog position), restored into a fresh server, and every table must
//! have the same row count and `CHECKSUM TABLE` on both sides.

use crate::support;

use lifeboat::drill::env::{Environment, EphemeralMariadb};
use support::*;

pub(crate) const SCHEMA: &str = r#"
DELIMITER //
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL, note TEXT CHARACTER SET utf8mb4, created DATETIME(6), balance DECIMAL(12,2) DEFAULT 0) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4//
CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, amount DECIMAL(12,2) NOT NULL, payload BLOB, FOREIGN KEY (customer_id) REFERENCES customers(id)) ENGINE=InnoDB//
CREATE TABLE audit (id BIGINT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(100), at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB//
CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (what) VALUES (CONCAT('order ', NEW.id))//
CREATE TRIGGER orders_bu BEFORE UPDATE ON orders FOR EACH ROW SET NEW.amount = GREATEST(NEW.amount, 0)//
CREATE PROCEDURE add_customers(IN n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < n DO
    INSERT INTO customers (name, note, created) VALUES (CONCAT('Kunde ', i, ' — Ærø 🚀 日本語'), REPEAT('ü', i % 50), '2024-01-02 03:04:05.123456');
    SET i = i + 1;
  END WHILE;
END//
CREATE FUNCTION order_total(c INT) RETURNS DECIMAL(14,2) READS SQL DATA RETURN (SELECT COALESCE(SUM(amount), 0) FROM orders WHERE customer_id = c)//
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM audit WHERE at < NOW() - INTERVAL 30 DAY//
CALL add_customers(2000)//
INSERT INTO orders (customer_id, amount, payload) SELECT id, id * 1.5, UNHEX(MD5(id)) FROM customers//
"#;

fn tables(c: &lifeboat::drill::env::ConnectionInfo) -> Vec<String> {
    mariadb(
        c,
        Some("shop"),
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop' ORDER BY 1",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn mariadb_backup_restores_with_equal_checksums() {
    let src = EphemeralMariadb::start(true).expect("source server");
    let sc = src.connection().unwrap().clone();
    mariadb(&sc, None, "CREATE DATABASE shop CHARACTER SET utf8mb4");
    mariadb(&sc, Some("shop"), SCHEMA);

    let ws = Workspace::new();
    let plan = ws.plan(
        "my",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"*/30 * * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"root\"\ndatabase = \"shop\"\nno_defaults = true\n",
            sc.socket.as_deref().unwrap().display()
        ),
    );
    let o = run(lifeboat().args(["plan", "check"]).arg(&plan));
    assert!(o.status.success(), "plan check failed");
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&plan));
    assert!(o.status.success(), "backup failed");
    let snaps = ws.snapshots(&plan);
    assert_eq!(snaps.len(), 1);
    let meta = &snaps[0]["source_meta"];
    assert_eq!(meta["row_counts"]["tables"]["customers"], 2000);
    assert_eq!(meta["row_counts"]["tables"]["audit"], 2000);
    assert!(
        meta["binlog"]["file"]
            .as_str()
            .is_some_and(|f| f.contains("binlog")),
        "{meta}"
    );
    assert!(meta["server_version"].as_str().unwrap().contains("MariaDB"));

    let dst = EphemeralMariadb::start(false).expect("target server");
    let dc = dst.connection().unwrap().clone();
    let o = run(lifeboat().args(["restore", "--plan"]).arg(&plan).args([
        "--job",
        "shop",
        "latest",
        "--to",
        &dc.url("shop"),
    ]));
    assert!(o.status.success(), "restore failed");

    let t = tables(&sc);
    assert_eq!(t, vec!["audit", "customers", "orders"]);
    assert_eq!(tables(&dc), t);
    for table in &t {
        let count = |c| mariadb(c, Some("shop"), &format!("SELECT COUNT(*) FROM `{table}`"));
        let sum = |c| mariadb(c, Some("shop"), &format!("CHECKSUM TABLE `{table}`"));
        assert_eq!(count(&sc), count(&dc), "row count of {table}");
        assert_eq!(sum(&sc), sum(&dc), "checksum of {table}");
        assert_eq!(
            meta["row_counts"]["tables"][table].to_string(),
            count(&sc),
            "recorded count of {table}"
        );
    }
    let objects = "SELECT (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'), (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop'), (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'shop')";
    assert_eq!(mariadb(&dc, None, objects), "2\t2\t1");
    assert_eq!(
        mariadb(&dc, Some("shop"), "SELECT name FROM customers WHERE id = 8"),
        mariadb(&sc, Some("shop"), "SELECT name FROM customers WHERE id = 8")
    );

    // The restored database is not empty any more: refused without --force.
    let o = run(lifeboat().args(["restore", "--plan"]).arg(&plan).args([
        "--job",
        "shop",
        "latest",
        "--to",
        &dc.url("shop"),
    ]));
    assert_eq!(o.status.code(), Some(2));
    let o = run(lifeboat().args(["restore", "--plan"]).arg(&plan).args([
        "--job",
        "shop",
        "latest",
        "--force",
        "--to",
        &dc.url("shop"),
    ]));
    assert!(o.status.success());
    assert_eq!(
        mariadb(&dc, Some("shop"), "SELECT COUNT(*) FROM orders"),
        "2000"
    );
    // the routines, triggers and events run as root@localhost: a drill's server will know
    assert_eq!(
        meta["definers"],
        serde_json::json!(["root@localhost"]),
        "{meta}"
    );

    // A backup user that may read the tables but not mysql.proc: mariadb-dump leaves the
    // routines out without an error, so lifeboat warns, naming the grant.
    mariadb(
        &sc,
        None,
        "CREATE USER 'limited'@'localhost'; GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON shop.* TO 'limited'@'localhost'",
    );
    let limited = ws.plan(
        "limited",
        &format!(
            "[[jobs]]\nname = \"shop\"\nschedule = \"*/30 * * * *\"\n[jobs.source]\ntype = \"mariadb\"\nsocket = \"{}\"\nuser = \"limited\"\ndatabase = \"shop\"\nno_defaults = true\n",
            sc.socket.as_deref().unwrap().display()
        ),
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&limited));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("cannot read mysql.proc"), "{err}");
    assert!(err.contains("GRANT SELECT ON mysql.proc"), "{err}");
    mariadb(
        &sc,
        None,
        "GRANT SELECT ON mysql.proc TO 'limited'@'localhost'",
    );
    let o = run(lifeboat().args(["backup", "--plan"]).arg(&limited));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("mysql.proc"), "{err}");
}
