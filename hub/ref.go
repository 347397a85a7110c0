package hub

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Prefix begins every model reference that [Client.Resolve] downloads.
const Prefix = "hf:"

// DefaultRevision is the revision a reference without "@REVISION" names.
const DefaultRevision = "main"

// Limits on the parts of a reference. Hugging Face allows 96 characters
// in an owner or repository name; the others are generous.
const (
	maxNameLen     = 96
	maxFileLen     = 1024
	maxRevisionLen = 256
)

// A Ref names one file in a Hugging Face repository at a revision:
// hf:OWNER/REPO/FILE[@REVISION]. FILE may contain slashes (a file in a
// folder of the repository).
type Ref struct {
	Owner, Repo string
	File        string // slash-separated path inside the repository
	Revision    string // branch, tag or commit; DefaultRevision if the reference named none
}

// IsRef reports whether s is meant as a hub reference, that is whether it
// begins with "hf:". It does not check the rest: [ParseRef] and
// [Client.Resolve] say what is wrong with a malformed one.
func IsRef(s string) bool { return strings.HasPrefix(s, Prefix) }

// ParseRef parses hf:OWNER/REPO/FILE or hf:OWNER/REPO/FILE@REVISION.
//
// Owner and repository names are letters, digits, '-', '_' and '.', and
// do not begin with '.' (as on Hugging Face). FILE's path elements are
// neither empty, "." nor "..", and contain no backslash, ':', '@' or
// control character, so that the cache path stays inside the cache
// directory on every system. FILE may not end in ".part" or ".lock",
// the suffixes of the cache's own temporary files. A revision is
// letters, digits, '-', '_', '.' and '/' (as in "refs/pr/1").
func ParseRef(s string) (Ref, error) {
	fail := func(format string, args ...any) (Ref, error) {
		return Ref{}, fmt.Errorf("hub: bad reference %q: %s", s, fmt.Sprintf(format, args...))
	}
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return fail("does not begin with %q", Prefix)
	}
	rest, rev, hasRev := strings.Cut(rest, "@")
	if !hasRev {
		rev = DefaultRevision
	}
	if err := checkRevision(rev); err != "" {
		return fail("revision: %s", err)
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 3 {
		return fail("want hf:OWNER/REPO/FILE")
	}
	owner, repo, file := parts[0], parts[1], parts[2]
	if err := checkName(owner); err != "" {
		return fail("owner: %s", err)
	}
	if err := checkName(repo); err != "" {
		return fail("repository: %s", err)
	}
	if err := checkFile(file); err != "" {
		return fail("file: %s", err)
	}
	return Ref{Owner: owner, Repo: repo, File: file, Revision: rev}, nil
}

// String returns the reference in the form ParseRef reads, leaving out
// "@main".
func (r Ref) String() string {
	s := Prefix + r.Owner + "/" + r.Repo + "/" + r.File
	if r.Revision != DefaultRevision {
		s += "@" + r.Revision
	}
	return s
}

// cachePath is where r's file lives under the cache root:
// OWNER/REPO/FILE for the default revision and OWNER/REPO@REVISION/FILE
// for others, with the revision's slashes written as "%2F". Names never
// contain '@', so the two cannot collide.
func (r Ref) cachePath() string {
	dir := r.Repo
	if r.Revision != DefaultRevision {
		dir += "@" + strings.ReplaceAll(r.Revision, "/", "%2F")
	}
	return filepath.Join(r.Owner, dir, filepath.FromSlash(r.File))
}

func checkName(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > maxNameLen:
		return fmt.Sprintf("longer than %d characters", maxNameLen)
	case s[0] == '.':
		return "begins with '.'"
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Sprintf("character %q not allowed", c)
		}
	}
	return ""
}

func checkRevision(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > maxRevisionLen:
		return fmt.Sprintf("longer than %d characters", maxRevisionLen)
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' && c != '/' {
			return fmt.Sprintf("character %q not allowed", c)
		}
	}
	return ""
}

func checkFile(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > maxFileLen:
		return fmt.Sprintf("longer than %d bytes", maxFileLen)
	case !utf8.ValidString(s):
		return "not UTF-8"
	case strings.HasSuffix(s, ".part") || strings.HasSuffix(s, ".lock"):
		return "ends in .part or .lock"
	}
	for _, el := range strings.Split(s, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Sprintf("path element %q not allowed", el)
		}
	}
	for _, c := range s {
		if c == '\\' || c == ':' || c == '@' || unicode.IsControl(c) || c == utf8.RuneError {
			return fmt.Sprintf("character %q not allowed", c)
		}
	}
	if path.Clean(s) != s {
		return "not a clean path"
	}
	return ""
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
