package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// ObjectStorage is backup_sites.<name>.object_storage in either form:
//   - myhoard's {"url": "<gocloud URL>"} (file://, mem://, s3://, gs://,
//     azblob://), optionally with "prefix";
//   - the original's {"storage_type": "local"|"s3"|"google"|"azure", ...}
//     with that type's keys, mapped onto the same URL form.
//
// After decoding, URL and Prefix hold the resolved location and the typed
// block of the original form (if any) keeps its credentials.
type ObjectStorage struct {
	// StorageType is "url" for the url form, else the original's type.
	StorageType string
	// URL is the gocloud.dev/blob bucket URL.
	URL string
	// Prefix is prepended to every key.
	Prefix string

	Local  *LocalStorage
	S3     *S3Storage
	Google *GoogleStorage
	Azure  *AzureStorage
}

// URLStorage is the url form.
type URLStorage struct {
	URL    string `json:"url"`
	Prefix string `json:"prefix"`
}

// LocalStorage is storage_type "local".
type LocalStorage struct {
	StorageType string `json:"storage_type"`
	Directory   string `json:"directory"`
	Prefix      string `json:"prefix"`
}

// S3Storage is storage_type "s3" (AWS or an S3-compatible server).
type S3Storage struct {
	StorageType        string `json:"storage_type"`
	Region             string `json:"region"`
	BucketName         string `json:"bucket_name"`
	AWSAccessKeyID     string `json:"aws_access_key_id"`
	AWSSecretAccessKey string `json:"aws_secret_access_key"`
	AWSSessionToken    string `json:"aws_session_token"`
	Prefix             string `json:"prefix"`
	Host               string `json:"host"`
	Port               int    `json:"port"`
	IsSecure           *bool  `json:"is_secure"`
	IsVerifyTLS        *bool  `json:"is_verify_tls"`
	SegmentSize        int64  `json:"segment_size"`
	StorageClass       string `json:"storage_class"`
	AddressingStyle    string `json:"addressing_style"`
}

// GoogleStorage is storage_type "google".
type GoogleStorage struct {
	StorageType    string         `json:"storage_type"`
	ProjectID      string         `json:"project_id"`
	BucketName     string         `json:"bucket_name"`
	CredentialFile string         `json:"credential_file"`
	Credentials    map[string]any `json:"credentials"`
	Prefix         string         `json:"prefix"`
	StorageClass   string         `json:"storage_class"`
}

// The storage classes new objects may be written in. (S3's GLACIER and
// DEEP_ARCHIVE are not among them: their objects cannot be read back
// without a restore request, so a restore would fail.)
var (
	s3StorageClasses  = []string{"STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "EXPRESS_ONEZONE"}
	gcsStorageClasses = []string{"STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE", "MULTI_REGIONAL", "REGIONAL", "DURABLE_REDUCED_AVAILABILITY"}
)

// S3 multipart limits: a part (segment_size) is 5 MiB to 5 GiB.
const (
	minSegmentSize = 5 << 20
	maxSegmentSize = 5 << 30
)

// StorageClass is the storage class new objects are written in ("": the
// bucket's default).
func (o *ObjectStorage) StorageClass() string {
	switch {
	case o.S3 != nil:
		return o.S3.StorageClass
	case o.Google != nil:
		return o.Google.StorageClass
	}
	return ""
}

// SegmentSize is the multipart upload part size (0: the default).
func (o *ObjectStorage) SegmentSize() int64 {
	if o.S3 != nil {
		return o.S3.SegmentSize
	}
	return 0
}

// SkipTLSVerify: is_verify_tls is false (S3 only).
func (o *ObjectStorage) SkipTLSVerify() bool {
	return o.S3 != nil && o.S3.IsVerifyTLS != nil && !*o.S3.IsVerifyTLS
}

func checkStorageClass(d *decoder, class string, allowed []string, path string) {
	if class != "" && !slices.Contains(allowed, class) {
		d.errs.add(join(path, "storage_class"), "%q is not one of %s", class, strings.Join(allowed, ", "))
	}
}

// AzureStorage is storage_type "azure".
type AzureStorage struct {
	StorageType string `json:"storage_type"`
	AccountName string `json:"account_name"`
	AccountKey  string `json:"account_key"`
	SASToken    string `json:"sas_token"`
	BucketName  string `json:"bucket_name"`
	Prefix      string `json:"prefix"`
	AzureCloud  string `json:"azure_cloud"`
	Host        string `json:"host"`
	Port        int    `json:"port"`
	IsSecure    *bool  `json:"is_secure"`
}

// urlSchemes are the gocloud.dev/blob schemes myhoard opens.
var urlSchemes = map[string]bool{"file": true, "mem": true, "s3": true, "gs": true, "azblob": true}

// decodeConfig reads an object_storage block. It is long because it is one
// case per storage_type of the original, each mapped onto the URL form.
func (o *ObjectStorage) decodeConfig(d *decoder, v any, path string) {
	obj, ok := v.(map[string]any)
	if !ok {
		d.errs.add(path, "must be an object, not %s", describe(v))
		return
	}
	typ, hasType := obj["storage_type"]
	_, hasURL := obj["url"]
	switch {
	case hasURL && hasType:
		d.errs.add(path, "give either url or storage_type, not both")
		return
	case hasURL:
		var u URLStorage
		d.decodeStruct(obj, reflect.ValueOf(&u).Elem(), path)
		o.StorageType, o.Prefix = "url", u.Prefix
		o.URL = checkBucketURL(d, u.URL, join(path, "url"))
		return
	case !hasType:
		d.errs.add(path, "needs url (a gocloud bucket URL) or storage_type (local, s3, google or azure)")
		return
	}
	ts, _ := typ.(string)
	o.StorageType = ts
	switch ts {
	case "local":
		o.Local = &LocalStorage{}
		d.decodeStruct(obj, reflect.ValueOf(o.Local).Elem(), path)
		o.Prefix = o.Local.Prefix
		switch {
		case o.Local.Directory == "":
			d.errs.add(join(path, "directory"), "is required for storage_type local")
		case !filepath.IsAbs(o.Local.Directory):
			d.errs.add(join(path, "directory"), "must be an absolute path, not %q", o.Local.Directory)
		default:
			o.URL = (&url.URL{Scheme: "file", Path: filepath.Clean(o.Local.Directory)}).String()
		}
	case "s3":
		o.S3 = &S3Storage{}
		d.decodeStruct(obj, reflect.ValueOf(o.S3).Elem(), path)
		s := o.S3
		o.Prefix = s.Prefix
		if s.BucketName == "" {
			d.errs.add(join(path, "bucket_name"), "is required for storage_type s3")
			return
		}
		q := url.Values{}
		if s.Region != "" {
			q.Set("region", s.Region)
		}
		if s.Host != "" {
			scheme := "https"
			if s.IsSecure != nil && !*s.IsSecure {
				scheme = "http"
				q.Set("disable_https", "true")
			}
			host := s.Host
			if s.Port != 0 {
				if s.Port < 1 || s.Port > 65535 {
					d.errs.add(join(path, "port"), "must be 1..65535, not %d", s.Port)
				}
				host = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
			}
			q.Set("endpoint", scheme+"://"+host)
			if s.AddressingStyle != "virtual" {
				q.Set("use_path_style", "true")
			}
		}
		checkStorageClass(d, s.StorageClass, s3StorageClasses, path)
		if s.SegmentSize != 0 && (s.SegmentSize < minSegmentSize || s.SegmentSize > maxSegmentSize) {
			d.errs.add(join(path, "segment_size"), "must be between 5 MiB and 5 GiB (S3's part sizes), not %d", s.SegmentSize)
		}
		if (s.AWSAccessKeyID == "") != (s.AWSSecretAccessKey == "") {
			d.errs.add(path, "aws_access_key_id and aws_secret_access_key go together")
		}
		o.URL = (&url.URL{Scheme: "s3", Host: s.BucketName, RawQuery: q.Encode()}).String()
	case "google":
		o.Google = &GoogleStorage{}
		d.decodeStruct(obj, reflect.ValueOf(o.Google).Elem(), path)
		o.Prefix = o.Google.Prefix
		if o.Google.BucketName == "" {
			d.errs.add(join(path, "bucket_name"), "is required for storage_type google")
			return
		}
		checkStorageClass(d, o.Google.StorageClass, gcsStorageClasses, path)
		if o.Google.CredentialFile != "" && o.Google.Credentials != nil {
			d.errs.add(path, "give credential_file or credentials, not both")
		}
		o.URL = (&url.URL{Scheme: "gs", Host: o.Google.BucketName}).String()
	case "azure":
		o.Azure = &AzureStorage{}
		d.decodeStruct(obj, reflect.ValueOf(o.Azure).Elem(), path)
		a := o.Azure
		o.Prefix = a.Prefix
		if a.BucketName == "" {
			d.errs.add(join(path, "bucket_name"), "is required for storage_type azure")
			return
		}
		if a.AccountName == "" {
			d.errs.add(join(path, "account_name"), "is required for storage_type azure")
		}
		if a.AccountKey != "" && a.SASToken != "" {
			d.errs.add(path, "give account_key or sas_token, not both")
		}
		q := url.Values{}
		if a.Host != "" {
			host := a.Host
			if a.Port != 0 {
				host = net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
			}
			q.Set("domain", host)
			if a.IsSecure != nil && !*a.IsSecure {
				q.Set("protocol", "http")
			}
		}
		o.URL = (&url.URL{Scheme: "azblob", Host: a.BucketName, RawQuery: q.Encode()}).String()
	default:
		msg := fmt.Sprintf("unknown storage_type %s", describe(typ))
		if s := suggest(ts, []string{"local", "s3", "google", "azure"}); s != "" && ts != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		} else {
			msg += " (want local, s3, google or azure, or use the url form)"
		}
		if ts == "swift" || ts == "sftp" {
			msg = fmt.Sprintf("storage_type %q is not supported by myhoard (want local, s3, google or azure)", ts)
		}
		d.errs.add(join(path, "storage_type"), "%s", msg)
	}
}

func checkBucketURL(d *decoder, raw, path string) string {
	if raw == "" {
		d.errs.add(path, "must not be empty")
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		d.errs.add(path, "is not a URL: %v", err)
		return ""
	}
	if !urlSchemes[u.Scheme] {
		d.errs.add(path, "unsupported scheme %q (want file, mem, s3, gs or azblob)", u.Scheme)
		return ""
	}
	if u.Scheme == "file" && (u.Path == "" || !strings.HasPrefix(u.Path, "/")) {
		d.errs.add(path, "file URLs need an absolute directory, as in file:///var/lib/myhoard/backups")
		return ""
	}
	if (u.Scheme == "s3" || u.Scheme == "gs" || u.Scheme == "azblob") && u.Host == "" {
		d.errs.add(path, "%s URLs need a bucket name, as in %s://my-bucket", u.Scheme, u.Scheme)
		return ""
	}
	return raw
}
