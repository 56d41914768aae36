<?php
// Test harness for docs/snippets/symfony_controller.php (tests/it/recipes.rs): the front
// controller of `php -S 127.0.0.1:0 symfony_front.php`, with Debian's
// php-symfony-http-foundation in place of Composer's vendor/autoload.php.
require '/usr/share/php/Symfony/Component/HttpFoundation/autoload.php';
require __DIR__ . '/../../../../docs/snippets/symfony_controller.php';

use Symfony\Component\HttpFoundation\Request;

$request = Request::createFromGlobals();
if ($request->getMethod() !== 'POST' || $request->getPathInfo() !== '/webhook/abstrakt') {
    http_response_code(404);
    return;
}
(new AbstraktWebhookController())($request)->send();
