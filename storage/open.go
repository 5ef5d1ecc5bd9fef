package storage

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/oauth2/google"

	"gocloud.dev/blob"
	"gocloud.dev/blob/azureblob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/gcsblob"
	_ "gocloud.dev/blob/memblob" // mem:// URLs
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcp"

	"github.com/myhoard/myhoard/config"
)

// openBucket opens a site's bucket. The url form goes through gocloud's
// URL openers (credentials from the environment, as gocloud documents);
// the original's storage_type forms are opened with their own credentials
// so that no process-wide environment is touched.
func openBucket(ctx context.Context, oc *config.ObjectStorage) (*blob.Bucket, error) {
	u, err := url.Parse(oc.URL)
	if err != nil {
		return nil, err
	}
	switch {
	case u.Scheme == "file":
		// Local directories are created on first use, as the original does.
		dir := filepath.Clean(u.Path)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create directory: %w", err)
		}
		return fileblob.OpenBucket(dir, &fileblob.Options{NoTempDir: true, Metadata: fileblob.MetadataDontWrite})
	case oc.S3 != nil:
		return openS3(ctx, oc.S3)
	case oc.Google != nil:
		return openGCS(ctx, oc.Google)
	case oc.Azure != nil:
		return openAzure(ctx, oc.Azure)
	}
	return blob.OpenBucket(ctx, oc.URL)
}

func openS3(ctx context.Context, c *config.S3Storage) (*blob.Bucket, error) {
	region := c.Region
	if region == "" {
		region = "us-east-1"
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(region)}
	if c.AWSAccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(c.AWSAccessKeyID, c.AWSSecretAccessKey, c.AWSSessionToken)))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("AWS config: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Host != "" {
			o.BaseEndpoint = aws.String(endpoint(c.Host, c.Port, c.IsSecure))
			o.UsePathStyle = c.AddressingStyle != "virtual"
		}
		// Listings read many small objects at once: keep a connection
		// for each (the SDK keeps 10 a host, and dials again above that).
		skipVerify := c.IsVerifyTLS != nil && !*c.IsVerifyTLS
		o.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
			if skipVerify {
				// is_verify_tls false (warned about when the site opens)
				tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the operator's explicit choice
			}
		})
		// Retries are the site's own (counted, with its backoff).
		o.Retryer = aws.NopRetryer{}
		// S3-compatible servers often lack the newer checksum headers.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return s3blob.OpenBucket(ctx, client, c.BucketName, nil)
}

func openGCS(ctx context.Context, c *config.GoogleStorage) (*blob.Bucket, error) {
	var client *gcp.HTTPClient
	switch {
	case os.Getenv("STORAGE_EMULATOR_HOST") != "":
		client = gcp.NewAnonymousHTTPClient(gcsTransport())
	case c.CredentialFile != "" || c.Credentials != nil:
		var data []byte
		if c.CredentialFile != "" {
			b, err := os.ReadFile(c.CredentialFile)
			if err != nil {
				return nil, fmt.Errorf("read credential_file: %w", err)
			}
			data = b
		} else {
			b, err := json.Marshal(c.Credentials)
			if err != nil {
				return nil, fmt.Errorf("credentials: %w", err)
			}
			data = b
		}
		// Only the credential types a backup site uses are accepted.
		var kind struct {
			Type google.CredentialsType `json:"type"`
		}
		if err := json.Unmarshal(data, &kind); err != nil {
			return nil, fmt.Errorf("google credentials are not JSON: %w", err)
		}
		if kind.Type != google.ServiceAccount && kind.Type != google.AuthorizedUser {
			return nil, fmt.Errorf("google credentials of type %q are not supported (want %s or %s)", kind.Type, google.ServiceAccount, google.AuthorizedUser)
		}
		creds, err := google.CredentialsFromJSONWithType(ctx, data, kind.Type, "https://www.googleapis.com/auth/devstorage.read_write")
		if err != nil {
			return nil, fmt.Errorf("google credentials: %w", err)
		}
		client, err = gcp.NewHTTPClient(gcsTransport(), creds.TokenSource)
		if err != nil {
			return nil, err
		}
	default:
		creds, err := gcp.DefaultCredentials(ctx)
		if err != nil {
			return nil, fmt.Errorf("google default credentials: %w", err)
		}
		client, err = gcp.NewHTTPClient(gcsTransport(), gcp.CredentialsTokenSource(creds))
		if err != nil {
			return nil, err
		}
	}
	return gcsblob.OpenBucket(ctx, client, c.BucketName, nil)
}

// gcsTransport keeps a connection for each of a listing's reads in flight
// (Go's default keeps 2 a host and dials again above that).
func gcsTransport() http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
	return tr
}

func openAzure(ctx context.Context, c *config.AzureStorage) (*blob.Bucket, error) {
	var base string
	if c.Host != "" {
		base = fmt.Sprintf("%s/%s/%s", endpoint(c.Host, c.Port, c.IsSecure), c.AccountName, c.BucketName) // emulator: path style
	} else {
		suffix := "core.windows.net"
		switch strings.ToLower(c.AzureCloud) {
		case "", "public":
		case "china":
			suffix = "core.chinacloudapi.cn"
		case "usgov", "government":
			suffix = "core.usgovcloudapi.net"
		default:
			return nil, fmt.Errorf("unknown azure_cloud %q (want public, china or usgov)", c.AzureCloud)
		}
		base = fmt.Sprintf("https://%s.blob.%s/%s", c.AccountName, suffix, c.BucketName)
	}
	// Retries are the site's own (counted, with its backoff); each attempt
	// is bounded by the site's attempt timeout, and connecting by these.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout = 30*time.Second, 2*time.Minute
	opts := &container.ClientOptions{ClientOptions: policy.ClientOptions{Transport: &http.Client{Transport: tr}, Retry: policy.RetryOptions{MaxRetries: -1}}}
	var client *container.Client
	var err error
	switch {
	case c.AccountKey != "":
		cred, cerr := container.NewSharedKeyCredential(c.AccountName, c.AccountKey)
		if cerr != nil {
			return nil, fmt.Errorf("azure account key: %w", cerr)
		}
		client, err = container.NewClientWithSharedKeyCredential(base, cred, opts)
	case c.SASToken != "":
		client, err = container.NewClientWithNoCredential(base+"?"+strings.TrimPrefix(c.SASToken, "?"), opts)
	default:
		err = errors.New("azure storage needs account_key or sas_token")
	}
	if err != nil {
		return nil, err
	}
	return azureblob.OpenBucket(ctx, client, nil)
}

// endpoint is the base URL of a custom storage endpoint (https unless
// is_secure is false).
func endpoint(host string, port int, isSecure *bool) string {
	scheme := "https"
	if isSecure != nil && !*isSecure {
		scheme = "http"
	}
	if port != 0 {
		host = net.JoinHostPort(host, strconv.Itoa(port))
	}
	return scheme + "://" + host
}

// OpenSites opens and checks every configured backup site (writable ones
// with a write/read/delete probe, recovery-only ones with a listing) and
// loads their encryption keys. On any failure nothing stays open.
func OpenSites(ctx context.Context, sites map[string]*config.Site, opts SiteOptions) (map[string]*Site, Keyring, error) {
	keys := Keyring{}
	open := map[string]*Site{}
	fail := func(err error) (map[string]*Site, Keyring, error) {
		for _, s := range open {
			s.Close()
		}
		return nil, nil, err
	}
	for name, sc := range sites {
		var kp *KeyPair
		if sc.EncryptionKeys != nil {
			var err error
			kp, err = NewKeyPair(sc.EncryptionKeys.Public, sc.EncryptionKeys.Private)
			if err != nil {
				return fail(fmt.Errorf("backup site %s: encryption keys: %w", name, err))
			}
			keys[kp.ID] = kp
		}
		s, err := OpenSite(ctx, name, sc.ObjectStorage, opts)
		if err != nil {
			return fail(err)
		}
		s.Encode = EncodeOptions{Compression: Compression(sc.Compression.Algorithm), Level: sc.Compression.Level, Key: kp}
		s.RecoveryOnly = sc.RecoveryOnly
		if sc.RecoveryOnly {
			err = s.CheckReadOnly(ctx)
		} else {
			err = s.Check(ctx)
		}
		if err != nil {
			s.Close()
			return fail(err)
		}
		if opts.Log != nil {
			opts.Log.Info("backup site ready", "site", name, "url", s.URL, "recovery_only", sc.RecoveryOnly)
		}
		open[name] = s
	}
	return open, keys, nil
}
