package detect

import (
	"archive/zip"
	"bytes"
	"path"
	"regexp"
	"strings"
)

// Sensitive-attachment reasons.
const (
	ReasonPrivateKey = "private key"
	ReasonKeyBundle  = "certificate with private key"
	ReasonKeystore   = "keystore"
	ReasonEnvFile    = "environment file"
	ReasonDBDump     = "database dump"
	ReasonCredFile   = "credentials file"
)

var (
	sshKeyName = regexp.MustCompile(`^id_(?:rsa|dsa|ecdsa|ed25519|ecdsa_sk|ed25519_sk|xmss)$`)
	envName    = regexp.MustCompile(`^(?:\.env(?:\..+)?|.+\.env|\.envrc|env\.(?:local|prod|production|staging|dev|development))$`)
	dumpName   = regexp.MustCompile(`\.(?:sql|dump|pgdump|pg_dump|mysqldump|bson)(?:\.(?:gz|bz2|xz|zst|zip|7z|lz4))?$`)
	envLine    = regexp.MustCompile(`(?m)^\s*(?:export\s+)?[A-Z][A-Z0-9_]*(?:SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|APIKEY|PRIVATE_KEY|ACCESS_KEY|CREDENTIALS?)[A-Z0-9_]*\s*=\s*\S+`)
	assignLine = regexp.MustCompile(`(?m)^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=`)
)

var sensitiveExt = map[string]string{
	".key": ReasonPrivateKey, ".ppk": ReasonPrivateKey, ".p8": ReasonPrivateKey, ".pk8": ReasonPrivateKey,
	".p12": ReasonKeyBundle, ".pfx": ReasonKeyBundle,
	".jks": ReasonKeystore, ".keystore": ReasonKeystore, ".jceks": ReasonKeystore, ".bks": ReasonKeystore,
	".kdbx": ReasonKeystore, ".kdb": ReasonKeystore, ".keychain": ReasonKeystore, ".keychain-db": ReasonKeystore,
	".sqlite": ReasonDBDump, ".sqlite3": ReasonDBDump, ".db3": ReasonDBDump, ".mdb": ReasonDBDump, ".accdb": ReasonDBDump,
}

var sensitiveNames = map[string]string{
	".netrc": ReasonCredFile, "_netrc": ReasonCredFile, ".pgpass": ReasonCredFile, ".git-credentials": ReasonCredFile,
	".htpasswd": ReasonCredFile, "credentials": ReasonCredFile, ".pypirc": ReasonCredFile, ".npmrc": ReasonCredFile,
	"shadow": ReasonCredFile, "secring.gpg": ReasonKeystore, "wallet.dat": ReasonKeystore, "kubeconfig": ReasonCredFile,
	"credentials.json": ReasonCredFile, "service-account.json": ReasonCredFile,
}

var sensitiveTypes = map[string]string{
	"application/x-pkcs12": ReasonKeyBundle, "application/pkcs12": ReasonKeyBundle,
	"application/pkcs8": ReasonPrivateKey, "application/x-pkcs8": ReasonPrivateKey,
	"application/pkcs8-encrypted": ReasonPrivateKey, "application/x-pem-key": ReasonPrivateKey,
	"application/x-java-keystore": ReasonKeystore, "application/x-java-jce-keystore": ReasonKeystore,
	"application/x-keepass2": ReasonKeystore,
	"application/sql":        ReasonDBDump, "application/x-sql": ReasonDBDump,
	"application/vnd.sqlite3": ReasonDBDump, "application/x-sqlite3": ReasonDBDump,
}

// SensitiveAttachment reports why an attachment is sensitive, or "" when it
// is not, from its name, its declared type and its content's signature:
// private keys and key bundles, keystores, .env files, database dumps and
// credential files (also when named inside a zip archive). Secrets inside
// the content are found by Scan, which the judge runs as well.
func SensitiveAttachment(name, contentType string, content []byte) string {
	if r := sensitiveByName(name, content); r != "" {
		return r
	}
	ct := strings.ToLower(strings.TrimSpace(contentType))
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = strings.TrimSpace(ct[:i])
	}
	if r := sensitiveTypes[ct]; r != "" {
		return r
	}
	return sensitiveByContent(content)
}

func sensitiveByName(name string, content []byte) string {
	base := strings.ToLower(path.Base(strings.ReplaceAll(strings.TrimSpace(name), "\\", "/")))
	if base == "" || base == "." || base == "/" {
		return ""
	}
	if r := sensitiveNames[base]; r != "" {
		return r
	}
	if sshKeyName.MatchString(base) {
		return ReasonPrivateKey
	}
	if envName.MatchString(base) {
		return ReasonEnvFile
	}
	ext := path.Ext(base)
	if r := sensitiveExt[ext]; r != "" {
		// Apple Keynote documents are .key zip archives, not keys.
		if ext == ".key" && bytes.HasPrefix(content, []byte("PK\x03\x04")) {
			return ""
		}
		return r
	}
	if dumpName.MatchString(base) {
		// A plain .sql file is a dump only if it carries data; a
		// compressed one cannot be told apart and counts as a dump.
		if strings.HasSuffix(base, ".sql") && len(content) > 0 && !looksLikeDump(content) {
			return ""
		}
		return ReasonDBDump
	}
	if ext == ".db" && bytes.HasPrefix(content, []byte("SQLite format 3\x00")) {
		return ReasonDBDump
	}
	return ""
}

var dumpMarkers = [][]byte{
	[]byte("-- PostgreSQL database dump"), []byte("-- MySQL dump"), []byte("-- MariaDB dump"),
	[]byte("INSERT INTO"), []byte("insert into"), []byte(" FROM stdin;"),
}

func looksLikeDump(b []byte) bool {
	for _, m := range dumpMarkers {
		if bytes.Contains(b, m) {
			return true
		}
	}
	return false
}

var magic = []struct {
	sig    []byte
	reason string
}{
	{[]byte("SQLite format 3\x00"), ReasonDBDump},
	{[]byte("PGDMP"), ReasonDBDump},
	{[]byte("-- PostgreSQL database dump"), ReasonDBDump},
	{[]byte("-- MySQL dump"), ReasonDBDump},
	{[]byte("-- MariaDB dump"), ReasonDBDump},
	{[]byte{0xFE, 0xED, 0xFE, 0xED}, ReasonKeystore},                         // JKS
	{[]byte{0xCE, 0xCE, 0xCE, 0xCE}, ReasonKeystore},                         // JCEKS
	{[]byte{0x03, 0xD9, 0xA2, 0x9A, 0x67, 0xFB, 0x4B, 0xB5}, ReasonKeystore}, // KeePass 2
	{[]byte("PuTTY-User-Key-File-"), ReasonPrivateKey},
	{[]byte("openssh-key-v1\x00"), ReasonPrivateKey},
}

func sensitiveByContent(b []byte) string {
	for _, m := range magic {
		if bytes.HasPrefix(b, m.sig) {
			return m.reason
		}
	}
	head := b
	if len(head) > 64<<10 {
		head = head[:64<<10]
	}
	// A .env file under another name: mostly KEY=value lines, some of them
	// secrets.
	if envLine.Match(head) {
		lines := bytes.Count(head, []byte("\n")) + 1
		if n := len(assignLine.FindAllIndex(head, -1)); n >= 2 && n*2 >= lines {
			return ReasonEnvFile
		}
	}
	if bytes.HasPrefix(b, []byte("PK\x03\x04")) {
		return sensitiveInZip(b)
	}
	return ""
}

// sensitiveInZip checks the names in a zip archive's directory (nothing is
// decompressed).
func sensitiveInZip(b []byte) string {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return ""
	}
	for i, f := range zr.File {
		if i >= 1000 {
			break
		}
		if r := sensitiveByName(f.Name, nil); r != "" {
			return r + " in archive (" + path.Base(f.Name) + ")"
		}
	}
	return ""
}
