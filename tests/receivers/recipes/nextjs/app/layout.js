// The root layout Next.js requires; the recipe app has no pages.
export default function RootLayout({ children }) {
  return children;
}
