# A Rails controller that verifies the exact bytes hookd sent
# (app/controllers/webhooks_controller.rb; config/routes.rb:
# post "/webhook/abstrakt", to: "webhooks#abstrakt").
require "json"
require "openssl"

# ActionController::API has no CSRF check; from ActionController::Base, add
# `skip_forgery_protection` (hookd sends no CSRF token: the signature authenticates).
class WebhooksController < ActionController::API
  # X-Abstrakt-Delivery values already processed. In production: a table with a unique index.
  PROCESSED = Concurrent::Set.new

  def abstrakt
    body = request.raw_post # the raw bytes; params holds a parsed copy
    expected = OpenSSL::HMAC.hexdigest("SHA256", ENV.fetch("WEBHOOK_SECRET"), body)
    signature = request.headers["X-Abstrakt-Signature"].to_s
    # secure_compare compares in constant time (and takes strings of any length).
    unless ActiveSupport::SecurityUtils.secure_compare(expected, signature)
      return render json: { error: "Invalid signature" }, status: :unauthorized
    end

    delivery_id = request.headers["X-Abstrakt-Delivery"]
    # A retry of a delivery already handled: acknowledge it again, do nothing.
    return render json: { received: true, duplicate: true } if PROCESSED.include?(delivery_id)

    event = JSON.parse(body)
    logger.info "#{request.headers['X-Abstrakt-Event']} #{event['request_id']} (#{event['status']})"
    # Queue the work here, then remember the delivery and answer at once.
    PROCESSED.add(delivery_id)
    render json: { received: true, request_id: event["request_id"] }
  end
end
