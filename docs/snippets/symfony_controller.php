<?php
// A controller with Symfony HttpFoundation that verifies the exact bytes hookd sent. In a
// Symfony app, route it with #[Route('/webhook/abstrakt', methods: ['POST'])].

use Symfony\Component\HttpFoundation\JsonResponse;
use Symfony\Component\HttpFoundation\Request;

final class AbstraktWebhookController
{
    public function __invoke(Request $request): JsonResponse
    {
        $body = $request->getContent(); // the raw bytes; toArray() is a parsed copy
        $expected = hash_hmac('sha256', $body, (string) getenv('WEBHOOK_SECRET'));
        // hash_equals compares in constant time.
        if (!hash_equals($expected, (string) $request->headers->get('X-Abstrakt-Signature'))) {
            return new JsonResponse(['error' => 'Invalid signature'], 401);
        }

        // PHP keeps nothing between requests: the processed X-Abstrakt-Delivery values live
        // outside the process. Here a file each, created atomically; in production a table
        // with a unique key.
        $deliveryId = (string) $request->headers->get('X-Abstrakt-Delivery');
        $dir = getenv('WEBHOOK_DEDUP_DIR') ?: sys_get_temp_dir();
        $marker = @fopen($dir . '/abstrakt-' . hash('sha256', $deliveryId), 'x');
        if ($marker === false) {
            // A retry of a delivery already handled: acknowledge it again, do nothing.
            return new JsonResponse(['received' => true, 'duplicate' => true]);
        }
        fclose($marker);

        $event = json_decode($body, true, 512, JSON_THROW_ON_ERROR);
        error_log("{$request->headers->get('X-Abstrakt-Event')} {$event['request_id']} ({$event['status']})");
        // Queue the work here and answer at once.
        return new JsonResponse(['received' => true, 'request_id' => $event['request_id']]);
    }
}
