package testenv

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The soak's server must see what it is asked to: an id that arrived
// whole, over HTTP/1.1 and HTTP/2, and the marker in what a client sent,
// even when the request never completes.
func TestSoakAPI(t *testing.T) {
	ca := NewCA(t)
	api := NewSoakAPI(t, ca, 100, "giftshop.club")
	for i, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: ca.ClientTLSConfig(), ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		req, _ := http.NewRequest("POST", api.URL()+"/email", strings.NewReader(`{"Bcc":"leak-7@giftshop.club"}`))
		req.Header.Set(SoakHeader, []string{"7", "8"}[i])
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := []string{"HTTP/1.1", "HTTP/2.0"}[i]; resp.Proto != want {
			t.Errorf("proto %s, want %s", resp.Proto, want)
		}
	}
	// A request cut before its end: not arrived, its marker counted.
	c, err := tls.Dial("tcp", api.Addr(), ca.ClientTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("POST /email HTTP/1.1\r\nHost: x\r\nX-Soak-Id: 9\r\nContent-Length: 100\r\n\r\n{\"Bcc\":\"leak-9@gift")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("shop.club\"")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	Eventually(t, 10*time.Second, "the cut request's marker counted", func() bool { return api.Stats().Markers == 3 })
	if !api.Arrived(7) || !api.Arrived(8) || api.Arrived(9) {
		t.Errorf("arrived: 7 %v, 8 %v, 9 %v", api.Arrived(7), api.Arrived(8), api.Arrived(9))
	}
	if st := api.Stats(); st.Markers != 3 || st.Requests != 2 {
		t.Errorf("stats %+v, want 2 requests and 3 markers", st)
	}
}
