package attack

import "slices"

// defaultPaths are paths an API host is never asked for by its clients,
// only by probes: the categories of public sensitive-path wordlists
// (dotfiles and VCS metadata, backups and dumps, configuration and keys,
// other software's admin pages and known-vulnerable endpoints, server
// scripts). The rule counts them only when refused or missing (4xx): an
// application that serves one of them answers 2xx and is not probed by it.
var defaultPaths = []string{
	// dotfiles, VCS metadata, editor and IDE state: .env, .git/config,
	// .svn/entries, .DS_Store, .aws/credentials, .vscode/sftp.json...
	".*",
	// backups, editor leftovers, dumps
	"*.bak", "*.backup", "*.bkp", "*.old", "*.orig", "*.save", "*.swp", "*.swo", "*~", "*.sql", "*.sql.gz",
	"*.sql.zip", "*.sql.bz2", "*.dump", "*.sqlite", "*.sqlite3", "*.mdb",
	"backup.zip", "backup.tar.gz", "backup.tgz", "backup.rar", "backup.7z", "backup.tar", "www.zip", "www.tar.gz",
	"site.zip", "site.tar.gz", "web.zip", "wwwroot.zip", "htdocs.zip", "public_html.zip", "db.zip", "database.zip",
	// configuration, secrets and keys
	"web.config", "wp-config.php", "config.php", "configuration.php", "settings.php", "local.xml", "config.inc.php",
	"application.properties", "application.yml", "appsettings.json", "docker-compose.yml", "docker-compose.yaml",
	"dockerfile", "composer.json", "composer.lock", "database.yml", "secrets.json", "secrets.yml", "credentials.json",
	"sftp-config.json", "server.key", "privatekey.pem", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519",
	"phpinfo.php", "info.php", "php.ini", "web-inf", "meta-inf", "elmah.axd", "trace.axd",
	// other software's admin pages and known-vulnerable endpoints
	"/wp-admin", "/wp-content", "/wp-includes", "/wordpress", "wp-login.php", "xmlrpc.php", "/phpmyadmin", "/pma",
	"/myadmin", "/mysqladmin", "/dbadmin", "adminer.php", "/administrator", "/manager/html", "/host-manager",
	"/jmx-console", "/web-console", "/invoker", "/solr/admin", "/actuator", "/server-status", "/server-info",
	"/cgi-bin", "/hnap1", "/boaform", "/gponform", "/owa", "/ecp", "/autodiscover", "/_ignition", "/telescope",
	"/_profiler", "/vendor/phpunit", "/phpunit", "eval-stdin.php", "/console", "/_vti_bin", "/_vti_pvt",
	"/iisadmin", "/bitrix/admin", "/typo3", "/umbraco", "/druid", "/nacos", "/xxl-job-admin", "/setup.php",
	"/install.php", "/remote/login", "/global-protect", "/dana-na", "/vpn/index.html", "/+cscoe+", "/cf_scripts",
	// server scripts: an API host that runs none is only probed for them
	"*.php", "*.php5", "*.phtml", "*.asp", "*.aspx", "*.jsp", "*.jspx", "*.cfm", "*.cgi", "*.shtml",
}

// defaultAgents are the user agents that vulnerability scanners, fuzzers and
// internet-wide scanners send by default.
var defaultAgents = []string{
	"sqlmap", "nikto", "nmap", "masscan", "zgrab", "nuclei", "wpscan", "dirbuster", "gobuster", "feroxbuster",
	"fuzz faster u fool", "ffuf", "wfuzz", "dirsearch", "acunetix", "netsparker", "invicti", "w3af", "arachni",
	"openvas", "nessus", "qualys", "qualysguard", "skipfish", "whatweb", "jaeles", "(hydra)", "havij", "fimap", "commix", "xsstrike",
	"wapiti", "zmeu", "morfeus", "jorgee", "censysinspect", "expanse, a palo alto", "l9explore", "l9tcpid", "leakix",
	"sqlninja", "paros", "webinspect", "appscan", "grabber", "nsauditor", "pangolin", "webshag", "dalfox", "tplmap",
	"sstimap", "log4j-scan", "interactsh", "burpcollaborator", "vega/", "brutus", "bsqlbf", "sqlsus", "metasploit",
	"struts-pwn", "jexboss", "zmap", "netlab360", "internet-measurement", "scaninfo",
}

// DefaultPaths are the sensitive-path patterns a policy starts from.
func DefaultPaths() []string { return slices.Clone(defaultPaths) }

// DefaultAgents are the scanner user-agent patterns a policy starts from.
func DefaultAgents() []string { return slices.Clone(defaultAgents) }
