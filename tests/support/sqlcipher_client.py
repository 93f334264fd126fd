"""An independent SQLCipher 4 client (the PyPI `sqlcipher3` binding) driven by lango's tests.

Reads one JSON request on stdin (so keys never appear in argv):
  {"path": "...", "key": "x'HEX'" | "passphrase" | null, "raw": true|false,
   "pragmas": ["cipher_compatibility = 4", ...], "statements": ["..."], "query": "SELECT ..."}
Writes one JSON object on stdout: {"cipher_version": "...", "rows": [[...]]} or {"error": "..."}.
Blobs are returned as hex strings.
"""
import json
import sys

from sqlcipher3 import dbapi2 as sqlite


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def main():
    req = json.load(sys.stdin)
    out = {}
    try:
        conn = sqlite.connect(req["path"])
        cur = conn.cursor()
        key = req.get("key")
        if key is not None:
            if req.get("raw"):
                cur.execute('PRAGMA key = "%s"' % key)
            else:
                cur.execute("PRAGMA key = %s" % lit(key))
        for p in req.get("pragmas", []):
            cur.execute("PRAGMA " + p)
        out["cipher_version"] = cur.execute("PRAGMA cipher_version").fetchone()[0]
        for s in req.get("statements", []):
            cur.execute(s)
        conn.commit()
        if req.get("query"):
            rows = []
            for r in cur.execute(req["query"]).fetchall():
                rows.append([v.hex() if isinstance(v, (bytes, bytearray)) else v for v in r])
            out["rows"] = rows
        conn.close()
    except Exception as e:  # noqa: BLE001 - report any failure to the test
        out["error"] = str(e)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
