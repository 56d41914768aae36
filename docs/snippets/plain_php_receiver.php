<?php
// A receiver in plain PHP that verifies the exact bytes hookd sent:
// php -S 127.0.0.1:3000 plain_php_receiver.php (or behind PHP-FPM).

function answer(int $status, array $json): void
{
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($json);
}

if ($_SERVER['REQUEST_METHOD'] !== 'POST') {
    answer(405, ['error' => 'Method not allowed']);
    return;
}

$body = file_get_contents('php://input'); // the raw bytes; $_POST is empty for JSON
$expected = hash_hmac('sha256', $body, (string) getenv('WEBHOOK_SECRET'));
// hash_equals compares in constant time.
if (!hash_equals($expected, (string) ($_SERVER['HTTP_X_ABSTRAKT_SIGNATURE'] ?? ''))) {
    answer(401, ['error' => 'Invalid signature']);
    return;
}

// PHP keeps nothing between requests: the processed X-Abstrakt-Delivery values live outside
// the process. Here a file each, created atomically; in production a table with a unique key.
$deliveryId = (string) ($_SERVER['HTTP_X_ABSTRAKT_DELIVERY'] ?? '');
$dir = getenv('WEBHOOK_DEDUP_DIR') ?: sys_get_temp_dir();
$marker = @fopen($dir . '/abstrakt-' . hash('sha256', $deliveryId), 'x');
if ($marker === false) {
    // A retry of a delivery already handled: acknowledge it again, do nothing.
    answer(200, ['received' => true, 'duplicate' => true]);
    return;
}
fclose($marker);

$event = json_decode($body, true, 512, JSON_THROW_ON_ERROR);
$eventType = $_SERVER['HTTP_X_ABSTRAKT_EVENT'] ?? '';
error_log("{$eventType} {$event['request_id']} ({$event['status']})");
// Queue the work here and answer at once.
answer(200, ['received' => true, 'request_id' => $event['request_id']]);
