<?php
// The demo front controller: every path that is not a file under public/
// arrives here, with the path in PATH_INFO (as Symfony's local server does).
declare(strict_types=1);

$path = $_SERVER['PATH_INFO'] ?? '/';

// Requests served by each php-fpm worker, kept in a small file so the page
// shows how requests spread over the pool (and how a reload replaces it).
function count_request(): array
{
    $file = sys_get_temp_dir() . '/tqsup-demo-pids.json';
    $fh = @fopen($file, 'c+');
    if ($fh === false) {
        return [getmypid() => 1];
    }
    flock($fh, LOCK_EX);
    $counts = json_decode(stream_get_contents($fh) ?: '{}', true) ?: [];
    $pid = (string) getmypid();
    $counts[$pid] = ($counts[$pid] ?? 0) + 1;
    // Forget workers that no longer exist.
    foreach (array_keys($counts) as $p) {
        if (!file_exists("/proc/$p") && $p !== $pid) {
            unset($counts[$p]);
        }
    }
    ftruncate($fh, 0);
    rewind($fh);
    fwrite($fh, json_encode($counts));
    flock($fh, LOCK_UN);
    fclose($fh);
    ksort($counts);
    return $counts;
}

function h(?string $s): string
{
    return htmlspecialchars($s ?? '', ENT_QUOTES);
}

if ($path === '/redirect') {
    header('Location: /', true, 302);
    return;
}

if ($path === '/api') {
    header('Content-Type: application/json');
    echo json_encode([
        'php' => PHP_VERSION,
        'pid' => getmypid(),
        'method' => $_SERVER['REQUEST_METHOD'],
        'uri' => $_SERVER['REQUEST_URI'],
        'body_bytes' => strlen(file_get_contents('php://input')),
    ], JSON_PRETTY_PRINT), "\n";
    return;
}

$greeting = 'Hello from PHP';
if (preg_match('#^/hello/([^/]+)$#', $path, $m)) {
    $greeting = 'Hello, ' . $m[1];
} elseif ($path !== '/') {
    http_response_code(404);
    $greeting = 'Not found: ' . $path;
}

$counts = count_request();
$max = max($counts);
$rows = [
    'PHP version' => PHP_VERSION . ' (' . PHP_SAPI . ')',
    'Worker pid' => (string) getmypid(),
    'REQUEST_METHOD' => $_SERVER['REQUEST_METHOD'] ?? '',
    'REQUEST_URI' => $_SERVER['REQUEST_URI'] ?? '',
    'SCRIPT_NAME' => $_SERVER['SCRIPT_NAME'] ?? '',
    'PATH_INFO' => $_SERVER['PATH_INFO'] ?? '(none)',
    'QUERY_STRING' => $_SERVER['QUERY_STRING'] ?? '',
    'REMOTE_ADDR' => ($_SERVER['REMOTE_ADDR'] ?? '') . ':' . ($_SERVER['REMOTE_PORT'] ?? ''),
    'SERVER_SOFTWARE' => $_SERVER['SERVER_SOFTWARE'] ?? '',
    'HTTP_USER_AGENT' => $_SERVER['HTTP_USER_AGENT'] ?? '',
    'opcache.revalidate_freq' => (string) ini_get('opcache.revalidate_freq'),
];
?>
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>tqsup demo</title>
  <link rel="stylesheet" href="/style.css">
<?php if (is_file(__DIR__ . '/build/app.css')): ?>
  <link rel="stylesheet" href="/build/app.css">
<?php endif ?>
</head>
<body>
  <h1 class="built"><?= h($greeting) ?></h1>
  <p class="sub">Served by php-fpm, supervised by tqsup, through its dev HTTP front.
    Edit <code>public/index.php</code> and reload: no restart needed.</p>
  <nav>
    <a href="/">home</a>
    <a href="/hello/world?x=1">/hello/world?x=1</a>
    <a href="/api">/api</a>
    <a href="/redirect">/redirect</a>
    <a href="/style.css">/style.css</a>
  </nav>
  <table>
<?php foreach ($rows as $k => $v): ?>
    <tr><th><?= h($k) ?></th><td><code><?= h($v) ?></code></td></tr>
<?php endforeach ?>
  </table>
  <h2>Requests per worker</h2>
  <table>
<?php foreach ($counts as $pid => $n): ?>
    <tr><th>pid <?= h((string) $pid) ?></th>
      <td><span class="bar" style="width: <?= (int) (200 * $n / $max) ?>px"></span> <?= (int) $n ?></td></tr>
<?php endforeach ?>
  </table>
</body>
</html>
