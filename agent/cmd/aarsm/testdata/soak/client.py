# Soak client: sends the mails [FIRST, FIRST+N) to the SoakAPI over HTTPS,
# each with its id in X-Soak-Id; the ids listed in VIOLFILE carry an
# external Bcc (the postmark-mcp pattern). MODE "keepalive" reuses one
# connection (a new one after a failure), "fresh" opens one per mail.
# Prints "F ID ERROR" per failed mail, then "DONE OK FAILED".
import http.client, json, ssl, sys

host, port, ca, first, n, violfile, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
bad = set(int(x) for x in open(violfile).read().split())
ctx = ssl.create_default_context(cafile=ca)
conn = None
ok = failed = 0
out = []
for i in range(first, first + n):
    mail = {"From": "ops@company.com", "To": "ceo@company.com", "Subject": "soak %d" % i,
            "TextBody": "report %d " % i + "x" * (i % 700)}
    if i in bad:
        mail["Bcc"] = "leak-%d@giftshop.club" % i
    body = json.dumps(mail).encode()
    try:
        if conn is None:
            conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=60)
        conn.request("POST", "/email", body=body, headers={"Content-Type": "application/json", "X-Soak-Id": str(i)})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise Exception("status %d" % r.status)
        ok += 1
        if mode == "fresh":
            conn.close()
            conn = None
    except Exception as e:
        failed += 1
        out.append("F %d %s" % (i, type(e).__name__))
        try:
            conn.close()
        except Exception:
            pass
        conn = None
if out:
    print("\n".join(out))
print("DONE %d %d" % (ok, failed))
