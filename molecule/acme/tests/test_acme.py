"""The certificate Nginx serves came from the ACME CA, and stays renewed."""


def test_nginx_serves_the_certificate_the_ca_issued(host):
    served = host.check_output(
        "openssl s_client -connect 127.0.0.1:443 -servername chat.chatstack.test"
        " </dev/null 2>/dev/null | openssl x509 -noout -issuer -ext subjectAltName"
    )
    assert "Pebble" in served
    assert "DNS:chat.chatstack.test" in served


def test_certificate_is_kept_by_certbot(host):
    live = host.file("/etc/letsencrypt/live/chatstack/fullchain.pem")
    assert live.exists
    assert host.file("/etc/letsencrypt/live/chatstack/privkey.pem").exists
    renewal = host.file("/etc/letsencrypt/renewal/chatstack.conf").content_string
    assert "https://127.0.0.1:14000/dir" in renewal
    assert "webroot" in renewal


def served_serial(host) -> str:
    return host.check_output(
        "openssl s_client -connect 127.0.0.1:443 -servername chat.chatstack.test"
        " </dev/null 2>/dev/null | openssl x509 -noout -serial"
    )


def test_renewal_is_scheduled_and_reaches_nginx(host):
    timer = host.service("certbot.timer")
    assert timer.is_enabled
    assert timer.is_running
    # What the timer starts, now: with the drop-in's CA bundle it must succeed.
    result = host.run("systemctl start certbot.service")
    assert result.rc == 0, host.run("journalctl -u certbot --no-pager -n 30").stdout
    # A forced renewal gets a new certificate, and the deploy hook reloads Nginx.
    before = served_serial(host)
    renewed = host.run(
        "REQUESTS_CA_BUNDLE=/etc/pebble/api.crt"
        " certbot renew --force-renewal --no-random-sleep-on-renew"
    )
    assert renewed.rc == 0, renewed.stdout + renewed.stderr
    assert served_serial(host) != before


def test_http_still_redirects_except_challenges(host):
    response = host.check_output(
        "python3 -c \"import http.client as h; c=h.HTTPConnection('127.0.0.1', 80); "
        "c.request('GET', '/chat/'); print(c.getresponse().status)\""
    )
    assert response == "301"
